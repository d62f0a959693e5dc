"""People's verdicts on generated images, in SQLite: one row per (rater, image), committed per answer.

An image is identified by its record's config digest (`records.work_digest`) and its file name, so a vote
survives moving the results folder and never depends on a path a browser sent. WAL mode lets several
raters write at once and keeps every committed answer when the server is killed.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

DB_FILE = "human_judgments.sqlite"  # in the results folder, beside the records it judges
COLUMNS = ["rater", "digest", "file", "action_right", "subject_right", "seconds", "judged_at"]


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (each statement is its own committed transaction), creating the table."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an answer the page saw as saved is on disk
    db.execute("CREATE TABLE IF NOT EXISTS judgments (rater TEXT NOT NULL, digest TEXT NOT NULL, file TEXT NOT NULL, "
               "action_right INTEGER NOT NULL, subject_right INTEGER NOT NULL, seconds REAL NOT NULL, "
               "judged_at TEXT NOT NULL, PRIMARY KEY (rater, digest, file))")
    return db


def answer(db: sqlite3.Connection, rater: str, digest: str, file: str, action_right: bool, subject_right: bool,
           seconds: float) -> None:
    """Store one rater's verdicts on one image; answering the same image again replaces the row."""
    db.execute("INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?)",
               (rater, digest, file, int(action_right), int(subject_right), float(seconds),
                datetime.now(timezone.utc).isoformat(timespec="microseconds")))


def judged(db: sqlite3.Connection, rater: str) -> set[tuple[str, str]]:
    """The (digest, file) of every image this rater has answered."""
    return set(db.execute("SELECT digest, file FROM judgments WHERE rater = ? COLLATE NOCASE", (rater,)).fetchall())


def undo(db: sqlite3.Connection, rater: str, within: set[tuple[str, str]] | None = None) -> tuple[str, str] | None:
    """Delete this rater's latest answer (of the images `within`, a study's (digest, file), where given: an
    answer to another study's image is not this study's to undo); the (digest, file) it was about, or None."""
    answers = db.execute("SELECT rowid, digest, file FROM judgments WHERE rater = ? COLLATE NOCASE "
                         "ORDER BY judged_at DESC, rowid DESC", (rater,))
    for rowid, digest, file in answers:
        if within is None or (digest, file) in within:
            db.execute("DELETE FROM judgments WHERE rowid = ?", (rowid,))
            return digest, file
    return None


def read_votes(path: Path) -> pd.DataFrame:
    """Every stored answer, one row each (COLUMNS), raters' names in lower case; where one rater answered an
    image under two spellings of the name ("Alice", "alice"), the later answer."""
    db = connect(path)
    try:
        votes = pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM judgments ORDER BY judged_at, rowid", db)
    finally:
        db.close()
    votes["rater"] = votes.rater.str.lower()
    return votes.drop_duplicates(["rater", "digest", "file"], keep="last").reset_index(drop=True)


def majority(votes: pd.DataFrame) -> pd.DataFrame:
    """Per judged image (digest, file): how many raters judged it (human.raters), how many said yes to the
    action, to the subject and to both (human.action_yes, .subject_yes, .total_yes), and people's majority on
    each question (human.action_correct, .subject_correct): True or False where more than half agree, NaN
    where an even number of raters split evenly (a tie is no verdict, neither right nor wrong)."""
    votes = votes.assign(total_right=votes.action_right * votes.subject_right)
    grouped = votes.groupby(["digest", "file"])
    table = pd.DataFrame({"human.raters": grouped.rater.nunique()})
    for question in ("action", "subject", "total"):
        table[f"human.{question}_yes"] = grouped[f"{question}_right"].sum()
    for question in ("action", "subject"):
        share = table[f"human.{question}_yes"] / table["human.raters"]
        table[f"human.{question}_correct"] = (share > 0.5).astype(object).where(share != 0.5, float("nan"))
    return table.reset_index()
