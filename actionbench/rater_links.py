"""Per-rater links for the judging page: with `raters=[ann,bob]` (or a file of names) each rater gets a link of
their own, `/?rater=ann&token=...`, and the server takes answers, undos and next images only with the token of
the rater they are for, so on a shared network nobody can answer, undo or overwrite under another's name.

A token is an HMAC-SHA256 of the rater's name under a secret kept in the results folder (`JUDGE_SECRET`,
made on first use, readable by its owner only), so a restarted server honours the links it gave before, and
a link cannot be made up without that file. The links are printed and written beside the database
(`JUDGE_LINKS`, also owner-only). Deleting the secret revokes every link: the next start makes new ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from actionbench.errors import UserError

JUDGE_SECRET = "judge_secret"  # in results_dir
JUDGE_LINKS = "judge_links.txt"  # in results_dir, beside human_judgments.sqlite


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
    """The study's secret, made (32 random bytes, owner-only) the first time; two servers starting at once
    agree on one, since only one can create the file."""
    path = Path(results_dir) / JUDGE_SECRET
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = bytes.fromhex(path.read_text().strip())
        if len(secret) < 16:
            raise UserError(f"{path} holds no usable secret; delete it to make a new one (every link changes)") from None
        return secret
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
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
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{name}\t{link}\n" for name, link in links.items())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
