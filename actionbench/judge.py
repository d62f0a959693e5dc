"""`python -m actionbench.judge rater=NAME`: people judge the generated images in the browser, blind, as
ActionBench's published table was judged: for each image, is the action performed, is it the subject.

    python -m actionbench.judge rater=alice [results_dir=results] [host=127.0.0.1] [port=8765]
                                [per_method_action=N] [seed=0]
    python -m actionbench.judge export=votes.csv          # every stored answer, with its image's run

Serves one page (actionbench/judge_page/) over every image of the complete records under results_dir,
shuffled per rater, and stores each answer in results_dir/human_judgments.sqlite (actionbench/votes.py)
before showing the next image; `python -m actionbench.leaderboard` then adds people's columns. The page and
its requests know an image only by an opaque key: no method, run folder or score reaches the browser.
"""

from __future__ import annotations

import io
import random
import socket
import sys
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256
from pathlib import Path
from urllib.parse import quote

import hydra
import pandas as pd
from flask import Flask, Response, abort, jsonify, request, send_from_directory
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from actionbench.errors import UserError
from actionbench.files import write_atomic
from actionbench.leaderboard import read_records, run_task
from actionbench.rater_links import MIN_SECRET_BYTES, load_secret, rater_link, read_raters, valid_token, write_links
from actionbench.votes import DB_FILE, answer, connect, judged, read_votes, undo

PAGE = Path(__file__).parent / "judge_page"
MAX_SECONDS = 24 * 3600  # time on one image; more is a malformed answer
RUN_KEYS = ["benchmark", "model", "method", "action"]  # a stratum of per_method_action


@dataclass(frozen=True)
class Item:
    """One image to judge. The page sees its key, its subject's wording and its action's exemplars only."""

    key: str  # opaque and stable: a hash of (digest, file)
    digest: str  # the record's config digest (records.work_digest)
    file: str  # the image's path inside its run folder, as the record names it
    path: Path
    subject: str  # how the question names the subject: its prompt, e.g. "a dog"
    exemplars: int  # index into Study.exemplars


@dataclass(frozen=True)
class Study:
    items: tuple[Item, ...]
    exemplars: tuple[tuple[Path, ...], ...]  # the exemplar images of each action judged
    database: Path
    seed: int


def image_key(digest: str, file: str) -> str:
    return sha256(f"{digest}/{file}".encode()).hexdigest()[:16]


def check_rater(rater) -> str:
    """A rater's name as stored: non-empty text without control characters, at most 64 characters, in lower
    case, so that "Alice" coming back as "alice" continues her own study rather than starting another's."""
    name = str(rater).strip() if isinstance(rater, (str, int)) and not isinstance(rater, bool) else ""
    if not name or len(name) > 64 or not name.isprintable():
        raise UserError(f"rater={rater!r}: a rater is required, a name of 1 to 64 printable characters under which "
                        "the answers are stored, e.g. rater=alice")
    return name.lower()


def sample(images: pd.DataFrame, per_stratum: int, seed: int) -> pd.DataFrame:
    """`per_stratum` images of each benchmark x model x method x action: those whose key, a hash of (seed,
    stratum, image), is smallest. Each image's key is its own, so a stratum's sample never depends on what
    else is under results_dir: adding one method's runs leaves every other method's images as they were, and
    a rater who comes back finds the study they left."""
    strata = [f"run_{k}" for k in RUN_KEYS]
    stratum = images[strata].astype(str).agg("/".join, axis=1)
    keys = [sha256(f"{seed}/{where}/{digest}/{file}".encode()).hexdigest()
            for where, digest, file in zip(stratum, images.run_digest, images.file)]
    return images.assign(_key=keys).sort_values("_key").groupby(strata).head(per_stratum).drop(columns="_key")


def load_study(results_dir: Path, per_method_action: int | None = None, seed: int = 0) -> Study:
    """Every image of the complete records under results_dir (or, with per_method_action=N, N of each
    benchmark x model x method x action, drawn with `seed`), with its action's exemplars."""
    images, skipped = read_records(results_dir)
    for message in skipped:
        print(message, file=sys.stderr)
    if images.empty:
        raise UserError(f"no complete records under {results_dir}: nothing to judge (run `python -m actionbench.run` "
                        "first, or point results_dir= at the folder holding the runs)")
    if per_method_action is not None:
        images = sample(images, per_method_action, seed)
    images = images.drop_duplicates(["run_digest", "file"])  # the same images in two folders are judged once
    tasks, exemplars, items = {}, [], []
    for run_dir, rows in images.groupby("run_dir", sort=True):
        try:
            task = run_task(run_dir, rows.run_action.iloc[0])
        except UserError as err:
            raise UserError(f"{run_dir}: cannot show the exemplars of its action: {err}") from None
        shown = tuple(e.image for e in task.action.exemplars)
        if shown not in tasks:
            tasks[shown] = len(exemplars)
            exemplars.append(shown)
        index, prompts = tasks[shown], {s.name: s.prompt for s in task.subjects}
        items += [Item(image_key(digest, file), digest, file, Path(run_dir) / file, prompts.get(subject, subject), index)
                  for digest, file, subject in zip(rows.run_digest, rows.file, rows.subject)]
    database = Path(results_dir) / DB_FILE
    connect(database).close()  # created now: a folder the server cannot write to fails before anyone judges
    return Study(tuple(sorted(items, key=lambda item: item.key)), tuple(exemplars), database, seed)


def _png(path: Path) -> Response:
    """The image's pixels only, re-encoded: no metadata of the file reaches the browser."""
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buffer, format="PNG")
    return Response(buffer.getvalue(), mimetype="image/png")


def make_app(study: Study, raters: tuple[str, ...] = (), secret: bytes = b"") -> Flask:
    """The judging page and its JSON API; every answer is committed before the response that shows the next image.
    With `raters`, a request is served only for one of them and with their token (actionbench/rater_links.py), made
    with `secret`: never an empty or short key, under which anyone could compute every rater's token."""
    if raters and len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"make_app: a study of named raters needs its secret of at least {MIN_SECRET_BYTES} bytes "
                         f"(rater_links.load_secret), not a {len(secret)}-byte key")
    app = Flask(__name__, static_folder=str(PAGE), static_url_path="/page")
    by_key = {item.key: item for item in study.items}
    mine = {(item.digest, item.file) for item in study.items}

    @lru_cache(maxsize=256)
    def order(rater: str) -> tuple[Item, ...]:
        """Every method's images interleaved, in an order of this rater's own (seeded: the same on every visit)."""
        items = list(study.items)
        random.Random(f"{study.seed}/{rater}").shuffle(items)
        return tuple(items)

    def state(db, rater: str) -> dict:
        done = judged(db, rater) & mine  # answers to images outside this study (another sample) are not progress
        pending = [item for item in order(rater) if (item.digest, item.file) not in done]
        image = pending[0] if pending else None
        return {"rater": rater, "judged": len(study.items) - len(pending), "total": len(study.items), "can_undo": bool(done),
                "image": image and {"key": image.key, "url": f"/image/{image.key}", "subject": image.subject,
                                    "exemplars": [f"/exemplar/{image.exemplars}/{i}"
                                                  for i in range(len(study.exemplars[image.exemplars]))]}}

    def rater_of(value, token=None) -> str:
        """The request's rater; in a study of named raters, only with that rater's own token (else 403)."""
        try:
            rater = check_rater(value)
        except UserError as err:
            rater = None
            if not raters:
                abort(400, f"{err}; open the page as /?rater=YOUR_NAME")
        if raters and (rater not in raters or not valid_token(secret, rater, token)):
            abort(403, "this study gives each rater a link of their own, with a token: open the one you were given")
        return rater

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            abort(400, "the request body must be a JSON object")
        return data

    @app.errorhandler(HTTPException)
    def error(err: HTTPException):
        return jsonify(error=err.description), err.code

    @app.get("/")
    def page():
        return send_from_directory(PAGE, "index.html")

    @app.get("/api/next")
    def next_image():
        rater = rater_of(request.args.get("rater"), request.args.get("token"))
        with closing(connect(study.database)) as db:
            return jsonify(state(db, rater))

    @app.post("/api/answer")
    def store_answer():
        data = body()
        rater = rater_of(data.get("rater"), data.get("token"))
        item = by_key.get(data.get("key")) if isinstance(data.get("key"), str) else None
        if item is None:
            abort(404, f"unknown image key {data.get('key')!r}")
        if not isinstance(data.get("action"), bool) or not isinstance(data.get("subject"), bool):
            abort(400, "action and subject must each be true or false")
        seconds = data.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_SECONDS:
            abort(400, f"seconds must be a number from 0 to {MAX_SECONDS}")
        with closing(connect(study.database)) as db:
            answer(db, rater, item.digest, item.file, data["action"], data["subject"], seconds)
            return jsonify(state(db, rater))

    @app.post("/api/undo")
    def undo_last():
        data = body()
        rater = rater_of(data.get("rater"), data.get("token"))
        with closing(connect(study.database)) as db:
            undo(db, rater, within=mine)
            return jsonify(state(db, rater))

    @app.get("/image/<key>")
    def image(key: str):
        return _png(by_key[key].path) if key in by_key else abort(404, "unknown image key")

    @app.get("/exemplar/<int:index>/<int:number>")
    def exemplar(index: int, number: int):
        if index >= len(study.exemplars) or number >= len(study.exemplars[index]):
            abort(404, "no such exemplar")
        return _png(study.exemplars[index][number])

    return app


def export(results_dir: Path, out: Path) -> int:
    """Every stored answer to a CSV, with the run of its image where that record is still there; the row count."""
    path = Path(results_dir) / DB_FILE
    if not path.is_file():
        raise UserError(f"no human judgments at {path}: nobody has judged images of {results_dir} yet")
    votes = read_votes(path)
    images, _ = read_records(results_dir)
    if not images.empty:
        runs = images.drop_duplicates(["run_digest", "file"])[["run_digest", "file", *(f"run_{k}" for k in RUN_KEYS), "subject", "run_dir"]]
        votes = votes.merge(runs.rename(columns={"run_digest": "digest"}), on=["digest", "file"], how="left")
    write_atomic(out, inert(votes).to_csv(index=False).encode())
    return len(votes)


FORMULA = ("=", "+", "-", "@")  # a cell beginning so is a formula to a spreadsheet (rater names are free text)


def inert(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every text cell that begins with =, +, - or @ prefixed by a quote, as spreadsheets
    read it: shown as the text it is, never run as a formula (CSV formula injection). Numbers stay numbers."""
    def cell(value):
        return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA) else value

    return table.apply(lambda column: column if pd.api.types.is_numeric_dtype(column) else column.map(cell))


def serve(cfg: DictConfig) -> None:
    """Check the settings, load the study, then serve the page until Ctrl-C."""
    listed = cfg.get("raters")
    if listed is not None and cfg.rater is not None:
        raise UserError("give rater=NAME (one person; the page takes any name) or raters=[ann,bob] / raters=FILE "
                        "(a link with a secret token per rater, for a shared page), not both")
    raters = read_raters(OmegaConf.to_object(listed) if OmegaConf.is_config(listed) else listed,
                         check_rater) if listed is not None else []
    rater = None if raters else check_rater(cfg.rater)
    if isinstance(cfg.port, bool) or not isinstance(cfg.port, int) or not 0 <= cfg.port <= 65535:
        raise UserError(f"port={cfg.port!r} must be a port number from 0 to 65535 (0: any free port)")
    sample = cfg.per_method_action
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample <= 0):
        raise UserError(f"per_method_action={sample!r} must be a positive whole number (images per method x action), "
                        "or null for every image")
    study = load_study(Path(cfg.results_dir), cfg.per_method_action, cfg.seed)
    secret = load_secret(Path(cfg.results_dir)) if raters else b""
    server = make_server(cfg.host, cfg.port, make_app(study, tuple(raters), secret), threaded=True)
    loopback = cfg.host in ("127.0.0.1", "localhost", "::1")
    shown = socket.gethostname() if cfg.host in ("0.0.0.0", "::") else cfg.host
    print(f"{len(study.items)} images to judge under {cfg.results_dir}; answers go to {study.database}")
    print(f"bound to {cfg.host}: " + ("this machine only (host=0.0.0.0 shares the page with your network)" if loopback
                                       else "every machine that can reach this one can open the page and "
                                       + ("see images; only the raters' links below answer" if raters else "answer")))
    base = f"http://{shown}:{server.server_port}"
    if raters:
        links = {name: rater_link(base, secret, name) for name in raters}
        path = write_links(Path(cfg.results_dir), links)
        print(f"each rater's own link (only it can answer under that name; also in {path}):")
        for name, link in links.items():
            print(f"  {name}: {link}")
        print("Ctrl-C stops; a restart with the same results_dir honours the same links", flush=True)
    else:
        print(f"open {base}/?rater={quote(rater)}  (other raters: their own name after rater=; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every answer given is stored")


@hydra.main(version_base="1.3", config_path="../conf", config_name="judge")
def main(cfg: DictConfig) -> None:
    try:
        if cfg.export:
            rows = export(Path(cfg.results_dir), Path(cfg.export))
            print(f"wrote {rows} answers to {cfg.export}")
        else:
            serve(cfg)
    except UserError as err:
        print(f"actionbench.judge: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
