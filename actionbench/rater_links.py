"""Per-rater links for the judging page: with `raters=[ann,bob]` (or a file of names) each rater gets a link of
their own, `/?rater=ann&token=...`, and the server takes answers, undos and next images only with the token of
the rater they are for, so on a shared network nobody can answer, undo or overwrite under another's name.

A token is an HMAC-SHA256 of the rater's name under a secret kept in the results folder (`JUDGE_SECRET`,
made on first use, readable by its owner only; a copy others can read is refused), so a restarted server
honours the links it gave before, and a link cannot be made up without that file. The links are printed and
written beside the database (`JUDGE_LINKS`, also owner-only). Git ignores both files, in any folder: a results
folder's boards are committed, and git keeps no file's owner-only mode. Deleting the secret revokes every
link: the next start makes new ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from actionbench.errors import UserError
from actionbench.files import write_atomic, write_new

JUDGE_SECRET = "judge_secret"  # in results_dir
JUDGE_LINKS = "judge_links.txt"  # in results_dir, beside human_judgments.sqlite
SECRET_BYTES = 32  # the secret made on first use
MIN_SECRET_BYTES = 16  # the shortest accepted: a shorter HMAC key could be guessed


def read_raters(value, check_rater) -> list[str]:
    """The raters named by `raters=`: a list of names, or the path of a text file with one name per line
    (blank lines and `#` comments skipped); each name checked by `check_rater`, no name twice."""
    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise UserError(f"raters={value!r}: no such file; give a list of names (raters=[ann,bob]) or a text file "
                            "with one name per line")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    elif isinstance(value, (list, tuple)):
        names = list(value)
    else:
        raise UserError(f"raters={value!r}: give a list of names (raters=[ann,bob]) or a text file with one name per line")
    checked = [check_rater(name) for name in names]
    if not checked:
        raise UserError(f"raters={value!r} names nobody")
    twice = sorted({name for name in checked if checked.count(name) > 1})
    if twice:
        raise UserError(f"raters={value!r} names {', '.join(twice)} more than once")
    return checked


def load_secret(results_dir: Path) -> bytes:
    """The study's secret, made (32 random bytes, owner-only) the first time. Two servers starting at once agree on
    one: each writes its own in full under a temporary name and links it into place, where only the first link
    succeeds, so neither can read a file still being written."""
    path = Path(results_dir) / JUDGE_SECRET
    if not path.exists():
        write_new(path, (secrets.token_bytes(SECRET_BYTES).hex() + "\n").encode(), mode=0o600)
    return read_secret(path)


def read_secret(path: Path) -> bytes:
    """The secret in `path`; refused when others may read it (the file makes every rater's link)."""
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise UserError(f"{path} can be read by others (mode {mode:o}), and it makes every rater's link: chmod 600 "
                        f"{path} (or, if it was ever shared or committed, delete it; every link then changes)")
    try:
        secret = bytes.fromhex(path.read_text())
    except ValueError:  # not hex, or not text at all (UnicodeDecodeError)
        secret = b""
    if len(secret) < MIN_SECRET_BYTES:
        raise UserError(f"{path} holds no usable secret (it should hold {2 * SECRET_BYTES} hex digits); delete it "
                        "to make a new one (every rater's link changes)")
    return secret


def rater_token(secret: bytes, rater: str) -> str:
    return hmac.new(secret, rater.encode(), hashlib.sha256).hexdigest()[:32]


def valid_token(secret: bytes, rater: str, token) -> bool:
    return isinstance(token, str) and hmac.compare_digest(token.encode(), rater_token(secret, rater).encode())


def rater_link(base: str, secret: bytes, rater: str) -> str:
    return f"{base}/?rater={quote(rater)}&token={rater_token(secret, rater)}"


def write_links(results_dir: Path, links: dict[str, str]) -> Path:
    """`name<TAB>link` per rater, owner-only (the links are the raters' passwords), replaced whole."""
    path = Path(results_dir) / JUDGE_LINKS
    write_atomic(path, "".join(f"{name}\t{link}\n" for name, link in links.items()).encode(), mode=0o600)
    return path
