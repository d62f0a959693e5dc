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
    return set(db.execute("SELECT digest, file FROM judgments WHERE rater = ?", (rater,)).fetchall())


def undo(db: sqlite3.Connection, rater: str) -> tuple[str, str] | None:
    """Delete this rater's latest answer; the (digest, file) it was about, or None when there was none."""
    last = db.execute("DELETE FROM judgments WHERE rowid = (SELECT rowid FROM judgments WHERE rater = ? "
                      "ORDER BY judged_at DESC, rowid DESC LIMIT 1) RETURNING digest, file", (rater,)).fetchall()
    return tuple(last[0]) if last else None


def read_votes(path: Path) -> pd.DataFrame:
    """Every stored answer, one row each (COLUMNS)."""
    db = connect(path)
    try:
        return pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM judgments ORDER BY judged_at, rowid", db)
    finally:
        db.close()


def majority(votes: pd.DataFrame) -> pd.DataFrame:
    """Per judged image (digest, file): people's verdict on the action and the subject, each right only when
    more than half its raters said yes (a tie counts as not right), and how many raters judged it."""
    grouped = votes.groupby(["digest", "file"])
    return pd.DataFrame({
        "human.action_correct": grouped.action_right.mean() > 0.5,
        "human.subject_correct": grouped.subject_right.mean() > 0.5,
        "human.raters": grouped.rater.nunique(),
    }).reset_index()
