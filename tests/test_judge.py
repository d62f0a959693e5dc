"""Human judging: the server is blind and keeps every answer; the leaderboard's human columns and agreement."""

import io
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from judge_fixtures import METHODS, make_sweep
from omegaconf import OmegaConf
from PIL import Image

from actionbench import judge, leaderboard, rater_links
from actionbench.errors import UserError
from actionbench.votes import DB_FILE, answer, connect, majority
from eval.aggregate import agreement


@pytest.fixture
def sweep(tmp_path):
    return tmp_path, make_sweep(tmp_path)


def client_for(results, **kwargs):
    return judge.make_app(judge.load_study(results, **kwargs)).test_client()


def walk(client, rater, n=None, action=True, subject=True) -> list[str]:
    """Answer up to n images (all when None) as the page does; the keys answered, in the order shown."""
    keys, state = [], client.get(f"/api/next?rater={rater}").get_json()
    while state["image"] and (n is None or len(keys) < n):
        keys.append(state["image"]["key"])
        state = client.post("/api/answer", json={"rater": rater, "key": keys[-1], "action": action,
                                                 "subject": subject, "seconds": 1.5}).get_json()
    return keys


def rows(results):
    with sqlite3.connect(results / DB_FILE) as db:
        return db.execute("SELECT rater, digest, file, action_right, subject_right, seconds FROM judgments "
                          "ORDER BY judged_at").fetchall()


def test_page_requests_and_images_are_blind(sweep):
    results, images = sweep
    client = client_for(results)
    said = [client.get(path).get_data() for path in ("/", "/page/judge.js", "/page/judge.css")]
    response, pixels = client.get("/api/next?rater=alice"), []
    while response.get_json()["image"]:
        said.append(response.get_data())
        image = response.get_json()["image"]
        assert set(image) == {"key", "url", "subject", "exemplars"} and image["subject"] in ("a dog", "Barack Obama", "a chef")
        served = client.get(image["url"])
        assert served.status_code == 200 and served.mimetype == "image/png"
        pixels.append(served.get_data())
        said.append(str(served.headers).encode())
        assert "method" not in Image.open(io.BytesIO(pixels[-1])).info, "the file's metadata is stripped"
        assert len(image["exemplars"]) == 3 and client.get(image["exemplars"][0]).status_code == 200
        response = client.post("/api/answer", json={"rater": "alice", "key": image["key"], "action": True,
                                                    "subject": False, "seconds": 2})
    said.append(response.get_data())
    assert len(pixels) == len(images) == 12 and len(rows(results)) == 12
    everything = b"\n".join(said + pixels)
    for secret in (*METHODS, "dreambooth", "inversion", "runs/", str(results), "seed0", "correct", "cosine", "0.123",
                   "0.654", "prompt", *(row["digest"] for row in images.values())):
        assert secret.encode() not in everything, f"{secret!r} reached the browser"
    assert "Is the action being performed?" in said[0].decode() and "Is this" in said[0].decode()


def test_order_is_seeded_per_rater_and_interleaves_methods(sweep):
    results, images = sweep
    alice, bob = walk(client_for(results), "alice"), walk(client_for(results), "bob")
    assert sorted(alice) == sorted(bob) == sorted(images) and alice != bob
    runs = [images[key]["method"] for key in alice]
    assert sum(a != b for a, b in zip(runs, runs[1:])) >= 3, "methods are interleaved, not in blocks"
    done = client_for(results).get("/api/next?rater=alice").get_json()
    assert done["image"] is None and done["judged"] == done["total"] == 12, "the finish screen"
    (results / DB_FILE).unlink()
    assert walk(client_for(results, seed=1), "alice") != alice, "the study's seed enters every rater's order"


def test_resume_shows_the_next_image_of_the_raters_own_order(sweep):
    results, _ = sweep
    full = walk(client_for(results), "dave")  # dave's whole order
    (results / DB_FILE).unlink()
    assert walk(client_for(results), "dave", n=5) == full[:5]
    assert client_for(results).get("/api/next?rater=dave").get_json()["image"]["key"] == full[5]
    assert len(rows(results)) == 5


def test_answering_again_replaces_the_row_and_undo_removes_the_last(sweep):
    results, _ = sweep
    client = client_for(results)
    first, second = walk(client, "erin", n=2)
    client.post("/api/answer", json={"rater": "erin", "key": first, "action": False, "subject": False, "seconds": 3})
    stored = rows(results)
    assert len(stored) == 2 and stored[-1][3:] == (0, 0, 3.0), "one row per (rater, image): the latest answer"
    state = client.post("/api/undo", json={"rater": "erin"}).get_json()  # the latest answer is the changed one
    assert [r[3:] for r in rows(results)] == [(1, 1, 1.5)] and state["judged"] == 1
    assert state["image"]["key"] == first, "the undone image is shown again"
    client.post("/api/undo", json={"rater": "erin"})
    state = client.post("/api/undo", json={"rater": "erin"}).get_json()
    assert rows(results) == [] and state["can_undo"] is False and state["image"]["key"] == first


def test_bad_requests_are_refused_and_write_nothing(sweep):
    results, images = sweep
    client = client_for(results)
    key = next(iter(images))
    good = {"rater": "frank", "key": key, "action": True, "subject": False, "seconds": 1.0}
    for body, status, words in [
        ({k: v for k, v in good.items() if k != "rater"}, 400, "rater is required"),
        ({**good, "rater": "  "}, 400, "rater is required"),
        ({**good, "key": "0123456789abcdef"}, 404, "unknown image key"),
        ({**good, "key": ["x"]}, 404, "unknown image key"),
        ({**good, "action": "yes"}, 400, "true or false"),
        ({k: v for k, v in good.items() if k != "subject"}, 400, "true or false"),
        ({**good, "seconds": -1}, 400, "seconds"),
        ({**good, "seconds": "2"}, 400, "seconds"),
        ({**good, "seconds": True}, 400, "seconds"),
    ]:
        response = client.post("/api/answer", json=body)
        assert response.status_code == status and words in response.get_json()["error"], (body, response.get_json())
    assert client.post("/api/answer", data="not json", content_type="application/json").status_code == 400
    assert client.post("/api/answer", json=[good]).status_code == 400
    assert client.post("/api/undo", json={}).status_code == 400
    assert client.get("/api/next").status_code == 400 and "rater" in client.get("/api/next").get_json()["error"]
    assert rows(results) == []
    for path in ("/page/../../conf/judge.yaml", "/page/..%2f..%2fjudge.py", "/page/%2e%2e/judge.py",
                 "/image/../../README.md", f"/image/{key}/../../../judge.py", "/image/..%2f..%2frecord.json",
                 "/exemplar/0/99", "/exemplar/99/0", "/exemplar/-1/0", "/../../../etc/passwd", "/runs/record.json"):
        assert client.get(path).status_code == 404, path


def test_bad_settings_fail_before_anything_is_served(tmp_path):
    base = OmegaConf.create({"results_dir": str(tmp_path), "rater": "alice", "host": "127.0.0.1", "port": 0,
                             "per_method_action": None, "seed": 0, "export": None})
    for change, words in [({"rater": None}, "a rater is required"), ({"rater": ""}, "a rater is required"),
                          ({"port": 70000}, "port=70000"), ({"per_method_action": 0}, "per_method_action=0"),
                          ({}, f"no complete records under {tmp_path}")]:
        with pytest.raises(UserError, match=words):
            judge.serve(OmegaConf.merge(base, change))
    assert not (tmp_path / DB_FILE).exists()
    with pytest.raises(UserError, match="no human judgments"):
        judge.export(tmp_path, tmp_path / "votes.csv")


def test_stratified_sample_is_per_method_and_action_and_the_same_for_every_rater(tmp_path):
    images = make_sweep(tmp_path, samples=3)  # 9 images per run
    study = judge.load_study(tmp_path, per_method_action=2, seed=0)
    strata = pd.Series([(images[i.key]["method"], images[i.key]["action"]) for i in study.items]).value_counts()
    assert len(strata) == 4 and set(strata) == {2}
    assert judge.load_study(tmp_path, per_method_action=2, seed=0) == study
    assert {i.key for i in judge.load_study(tmp_path, per_method_action=2, seed=1).items} != {i.key for i in study.items}


def test_a_stratums_sample_stays_put_when_another_methods_runs_are_added(tmp_path):
    make_sweep(tmp_path, samples=3)
    before = {i.key for i in judge.load_study(tmp_path, per_method_action=2, seed=0).items}
    client = client_for(tmp_path, per_method_action=2, seed=0)
    walk(client, "ann")
    make_sweep(tmp_path, methods=("dreambooth",), samples=3)
    study = judge.load_study(tmp_path, per_method_action=2, seed=0)
    assert before < {i.key for i in study.items} and len(study.items) == len(before) + 4
    state = client_for(tmp_path, per_method_action=2, seed=0).get("/api/next?rater=ann").get_json()
    assert (state["judged"], state["total"]) == (8, 12), "a rater who had finished 8 of 8 keeps them"


def test_progress_and_undo_count_only_the_studys_images(tmp_path):
    images = make_sweep(tmp_path, samples=3)
    everything = client_for(tmp_path)
    study = judge.load_study(tmp_path, per_method_action=1, seed=0)
    inside = {i.key for i in study.items}
    outside = [k for k in images if k not in inside]
    client = judge.make_app(study).test_client()
    walk(client, "bo", n=2)
    for key in outside[:3]:  # answered later, in a study of every image
        everything.post("/api/answer", json={"rater": "bo", "key": key, "action": False, "subject": False, "seconds": 1})
    state = client.get("/api/next?rater=bo").get_json()
    assert (state["judged"], state["total"]) == (2, 4)
    state = client.post("/api/undo", json={"rater": "bo"}).get_json()
    assert state["judged"] == 1 and len(rows(tmp_path)) == 4, "undo took the study's last answer, not another's"
    client.post("/api/undo", json={"rater": "bo"})
    state = client.get("/api/next?rater=bo").get_json()
    assert state["judged"] == 0 and not state["can_undo"] and len(rows(tmp_path)) == 3


def test_rater_names_are_one_rater_whatever_their_case(sweep):
    results, _ = sweep
    client = client_for(results)
    first = walk(client, "Alice", n=1)
    state = client.get("/api/next?rater=alice").get_json()
    assert state["judged"] == 1 and state["image"]["key"] != first[0], "alice continues Alice's study"
    client.post("/api/answer", json={"rater": "ALICE", "key": first[0], "action": False, "subject": False, "seconds": 1})
    assert [r[0] for r in rows(results)] == ["alice"], "answering again under another case replaces the answer"
    assert judge.check_rater(" Bob ") == "bob"


def test_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(sweep, tmp_path):
    results, _ = sweep
    client = client_for(results)
    for rater in ("=HYPERLINK(\"http://x\")", "+1", "-1", "@SUM(A1)", "plain"):
        walk(client, rater, n=1)
    judge.export(results, tmp_path / "votes.csv")
    table = pd.read_csv(tmp_path / "votes.csv")
    assert sorted(table.rater) == sorted(["'=hyperlink(\"http://x\")", "'+1", "'-1", "'@sum(a1)", "plain"])
    assert table.seconds.dtype.kind == "f" and table.action_right.dtype.kind == "i", "numbers stay numbers"


def test_export_writes_every_answer_with_its_run(sweep, tmp_path):
    results, images = sweep
    client = client_for(results)
    keys = walk(client, "gina", n=3) + walk(client, "hal", n=2, action=False)
    out = tmp_path / "votes.csv"
    assert judge.export(results, out) == 5
    table = pd.read_csv(out)
    assert sorted(table.rater) == ["gina"] * 3 + ["hal"] * 2
    assert list(table.run_method) == [images[k]["method"] for k in keys]
    assert list(table.action_right) == [1, 1, 1, 0, 0] and set(table.subject) <= {"dog", "obama", "chef"}


# The leaderboard's human columns.

def test_majority_of_raters_leaves_ties_undecided_and_counts_the_votes():
    votes = pd.DataFrame({"rater": ["a", "b", "a", "b", "c", "a"], "digest": ["d"] * 6,
                          "file": ["tie", "tie", "two_of_three", "two_of_three", "two_of_three", "alone"],
                          "action_right": [1, 0, 1, 1, 0, 0], "subject_right": [1, 1, 0, 0, 1, 1]})
    verdicts = majority(votes).set_index("file")
    assert np.isnan(verdicts.loc["tie", "human.action_correct"]), "1-1 is no verdict, not a no"
    assert verdicts.loc["tie", "human.subject_correct"] == True  # noqa: E712
    assert verdicts.loc["two_of_three", ["human.action_correct", "human.subject_correct"]].tolist() == [True, False]
    assert verdicts.loc["alone", ["human.action_correct", "human.subject_correct"]].tolist() == [False, True]
    assert verdicts["human.raters"].to_dict() == {"alone": 1, "tie": 2, "two_of_three": 3}
    assert verdicts["human.action_yes"].to_dict() == {"alone": 0, "tie": 1, "two_of_three": 2}
    assert verdicts["human.total_yes"].to_dict() == {"alone": 0, "tie": 1, "two_of_three": 0}


def test_people_columns_are_the_mean_of_votes_so_an_even_split_counts_a_half(sweep):
    """Two raters: on every image of the first method they split on the action; on the second they agree it
    is right. A tie counted as "not right" would give the first method 0%."""
    results, images = sweep
    db = connect(results / DB_FILE)
    for key, row in images.items():
        split = row["method"] == METHODS[0]
        answer(db, "r1", row["digest"], row["file"], True, True, 1)
        answer(db, "r2", row["digest"], row["file"], not split, True, 1)
    db.close()
    board = leaderboard.build(results, resamples=50)[1].set_index("method")
    assert board.loc[METHODS[0], ["Human_Action", "Human_Subject", "Human_Total"]].tolist() == [50.0, 100.0, 50.0]
    assert board.loc[METHODS[1], "Human_Action"] == 100.0
    assert np.isnan(board.loc[METHODS[0], "Agree_Action"]), "no image has a majority on the action"
    assert board.loc[METHODS[0], "Fleiss_Action"] < 0 and np.isnan(board.loc[METHODS[1], "Fleiss_Action"])
    assert "Fleiss_Action" in leaderboard.markdown(leaderboard.build(results, resamples=10)[1])


def test_fleiss_kappa_matches_a_hand_computed_value():
    from eval.aggregate import fleiss_kappa

    # 4 images, 3 raters each: yes 3, 0, 2, 1. Pairs agreeing per image: 1, 1, 1/3, 1/3 -> mean 2/3; yes rate 6/12,
    # chance 1/2: kappa (2/3 - 1/2) / (1/2) = 1/3. An image with one rater says nothing of agreement.
    assert fleiss_kappa([3, 0, 2, 1, 1], [3, 3, 3, 3, 1]) == pytest.approx(1 / 3)
    assert fleiss_kappa([2, 0], [2, 2]) == pytest.approx(1.0)
    assert fleiss_kappa([1, 1], [2, 2]) == pytest.approx(-1.0)
    assert np.isnan(fleiss_kappa([1], [1])) and np.isnan(fleiss_kappa([2, 2], [2, 2]))


def test_kappa_matches_a_hand_computed_value():
    first = [True, True, False, False, True, False, True, True]
    second = [True, False, False, False, True, True, True, True]
    # observed 6/8; yes rates 5/8 each, so chance 25/64 + 9/64 = 34/64; kappa (48/64 - 34/64) / (30/64) = 7/15
    percent, kappa = agreement(first, second)
    assert percent == 75.0 and kappa == pytest.approx(7 / 15)
    assert agreement([True, False], [True, False]) == (100.0, 1.0)
    assert np.isnan(agreement([True, True], [True, True])[1]), "no variation: kappa undefined"


def _vote(results, images, keys, agree: bool, raters=("r1", "r2")):
    db = connect(results / DB_FILE)
    for rater in raters:
        for key in keys:
            row = images[key]
            answer(db, rater, row["digest"], row["file"], row["action_correct"] == agree, row["subject_correct"] == agree, 1)
    db.close()


def test_votes_matching_the_judges_give_their_columns_and_kappa_1_and_unjudged_images_are_left_out(sweep):
    results, images = sweep
    left_out = next(k for k, row in images.items() if row["method"] == METHODS[0] and row["action"] == "wave"
                    and row["action_correct"] and not row["subject_correct"])
    judged = [k for k in images if k != left_out]
    _vote(results, images, judged, agree=True)
    _, board, per_action, _ = leaderboard.build(results, resamples=200)
    for method in METHODS:
        mine = [images[k] for k in judged if images[k]["method"] == method]
        row = board[board.method == method].iloc[0]
        assert row.Human_images == len(mine)
        assert row.Human_Action == pytest.approx(100 * np.mean([r["action_correct"] for r in mine]), abs=1e-3)
        assert row.Human_Subject == pytest.approx(100 * np.mean([r["subject_correct"] for r in mine]), abs=1e-3)
        assert row.Human_Total == pytest.approx(100 * np.mean([r["action_correct"] and r["subject_correct"] for r in mine]), abs=1e-3)
        assert row.Human_Total_low <= row.Human_Total <= row.Human_Total_high
        assert (row.Agree_Action, row.Kappa_Action, row.Agree_Subject, row.Kappa_Subject) == (100, 1, 100, 1)
    partial = board[board.method == METHODS[0]].iloc[0]
    assert (partial.images, partial.Human_images, partial.Human_Action) == (6, 5, 60.0), "not 3/6: unjudged left out"
    assert set(per_action.Human_images) == {2, 3}
    bare = leaderboard.summarise(leaderboard.read_records(results)[0], leaderboard.KEYS, 200)
    assert board[bare.columns].equals(bare), "people's votes leave the automated columns and intervals as they were"


def test_votes_disagreeing_everywhere_give_kappa_at_most_0_and_the_board_shows_people(sweep):
    results, images = sweep
    _vote(results, images, list(images), agree=False, raters=("r1",))
    _, board, _, _ = leaderboard.build(results, resamples=50)
    assert (board.Agree_Action == 0).all() and (board.Kappa_Action <= 0).all() and (board.Kappa_Subject <= 0).all()
    leaderboard.main([f"results_dir={results}", "bootstrap=50"])
    page, csv = (results / "report.html").read_text(), pd.read_csv(results / "leaderboard.csv")
    assert {"Human_images", "Human_Total", "Human_Total_low", "Kappa_Action", "Agree_Subject"} <= set(csv.columns)
    markdown = (results / "LEADERBOARD.md").read_text()
    assert "People's verdicts" in markdown and "Kappa_Action" in markdown and "Human_Total" in page
    assert markdown.count("| textual_inversion |") == 3, "the board, people's verdicts, the per-category table"


def test_without_votes_the_board_has_no_human_columns(sweep):
    results, _ = sweep
    _, board, _, _ = leaderboard.build(results, resamples=10)
    assert not [c for c in board if c.startswith(("Human", "Agree", "Kappa"))]
    assert "People" not in leaderboard.markdown(board)


def linked_client(results, raters=("ann", "bob")):
    """The app of a study with per-rater links, its secret loaded as `serve` loads it (from results_dir)."""
    return judge.make_app(judge.load_study(results), raters, rater_links.load_secret(results)).test_client()


def test_raters_links_refuse_missing_or_forged_tokens_and_write_nothing(sweep):
    results, images = sweep
    client, secret = linked_client(results), rater_links.load_secret(results)
    ann, bob = (rater_links.rater_token(secret, name) for name in ("ann", "bob"))
    key = next(iter(images))
    good = {"rater": "ann", "token": ann, "key": key, "action": True, "subject": True, "seconds": 1.0}
    for token in (None, "", bob, "0" * 32, ann[:-1], ann.upper(), 12345):
        assert client.get(f"/api/next?rater=ann&token={token}").status_code == 403
        assert client.post("/api/answer", json={**good, "token": token}).status_code == 403
        assert client.post("/api/undo", json={"rater": "ann", "token": token}).status_code == 403
    eve = rater_links.rater_token(secret, "eve")  # a valid HMAC, but eve is not in the study
    assert client.post("/api/answer", json={**good, "rater": "eve", "token": eve}).status_code == 403
    assert client.get("/api/next?rater=ann").status_code == 403 and client.get("/api/next").status_code == 403
    assert "link of their own" in client.get("/api/next?rater=ann").get_json()["error"]
    assert rows(results) == []
    assert client.get(f"/api/next?rater=ann&token={ann}").get_json()["judged"] == 0
    assert client.post("/api/answer", json=good).status_code == 200 and len(rows(results)) == 1


def test_raters_cannot_touch_each_others_answers_and_links_survive_a_restart(sweep):
    results, _ = sweep
    client, secret = linked_client(results), rater_links.load_secret(results)
    ann, bob = (rater_links.rater_token(secret, name) for name in ("ann", "bob"))
    state = client.get(f"/api/next?rater=ann&token={ann}").get_json()
    for _ in range(2):
        state = client.post("/api/answer", json={"rater": "ann", "token": ann, "key": state["image"]["key"],
                                                 "action": True, "subject": False, "seconds": 2}).get_json()
    annes = rows(results)
    assert len(annes) == 2
    assert client.post("/api/undo", json={"rater": "ann", "token": bob}).status_code == 403
    assert client.post("/api/answer", json={"rater": "ann", "token": bob, "key": state["image"]["key"],
                                            "action": False, "subject": False, "seconds": 1}).status_code == 403
    assert client.post("/api/undo", json={"rater": "bob", "token": bob}).status_code == 200, "bob's own undo"
    assert rows(results) == annes, "bob's requests left ann's answers as they were"
    # A restarted server: a new app over the same results folder honours the same links, and only those.
    restarted = linked_client(results)
    assert rater_links.load_secret(results) == secret
    assert restarted.get(f"/api/next?rater=ann&token={ann}").get_json()["judged"] == 2
    assert restarted.get(f"/api/next?rater=bob&token={ann}").status_code == 403
    assert oct((results / rater_links.JUDGE_SECRET).stat().st_mode & 0o777) == "0o600"


def test_servers_starting_at_once_all_read_the_one_secret_the_first_wrote(tmp_path):
    """Eight servers start over one fresh results folder at the same moment, 20 times: none fails (none reads a
    secret file still being written), all read the same secret, and no temporary file is left behind."""
    for round in range(20):
        folder = tmp_path / f"study{round}"
        folder.mkdir()
        start, secrets, errors = threading.Barrier(8), [], []

        def server():
            start.wait()
            try:
                secrets.append(rater_links.load_secret(folder))
            except Exception as err:  # noqa: BLE001 - collected: the test shows every failure
                errors.append(err)

        threads = [threading.Thread(target=server) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, f"round {round}: {errors[0]!r}"
        assert len(secrets) == 8 and len(set(secrets)) == 1 and len(secrets[0]) == rater_links.SECRET_BYTES
        assert [p.name for p in folder.iterdir()] == [rater_links.JUDGE_SECRET]
        assert oct((folder / rater_links.JUDGE_SECRET).stat().st_mode & 0o777) == "0o600"


def test_a_bad_or_readable_secret_is_refused_with_one_message_naming_it(tmp_path):
    path = tmp_path / rater_links.JUDGE_SECRET
    for text in ("", "not a secret\n", "ab" * 8, b"\xff\xfe"):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        path.chmod(0o600)
        with pytest.raises(UserError, match=f"{path} holds no usable secret .*delete it"):
            rater_links.load_secret(tmp_path)
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o644)  # as a checkout of a committed secret has it
    with pytest.raises(UserError, match=f"{path} can be read by others \\(mode 644\\).*chmod 600 {path}"):
        rater_links.load_secret(tmp_path)
    path.chmod(0o600)
    assert rater_links.load_secret(tmp_path) == bytes.fromhex("ab" * 32)


def test_links_are_written_owner_only_through_a_temporary_name_of_their_own(tmp_path):
    """A file planted at a fixed temporary name (here a link to another file) is never written through."""
    other = tmp_path / "other.txt"
    other.write_text("kept\n")
    (tmp_path / f".{rater_links.JUDGE_LINKS}.tmp").symlink_to(other)
    path = rater_links.write_links(tmp_path, {"ann": "http://host/?rater=ann&token=1"})
    assert other.read_text() == "kept\n"
    assert not path.is_symlink() and path.read_text() == "ann\thttp://host/?rater=ann&token=1\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_study_of_named_raters_refuses_an_empty_key(sweep):
    results, _ = sweep
    study = judge.load_study(results)
    for key in (b"", b"short"):
        with pytest.raises(ValueError, match="needs its secret"):
            judge.make_app(study, ("ann",), key)
    assert judge.make_app(study).test_client().get("/api/next?rater=ann").status_code == 200, "one person: no key"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_ignores_the_judges_secret_and_links_in_any_results_folder():
    root = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "rev-parse"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    paths = ["results/judge_secret", "results/judge_links.txt", "results/world/judge_secret",
             "elsewhere/study/judge_links.txt", "results/.judge_secret.0123456789abcdef.tmp"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
    assert ignored.stdout.split() == paths
    kept = subprocess.run(["git", "check-ignore", "--no-index", "results/README.md", "actionbench/judge.py"], cwd=root,
                          capture_output=True, text=True)
    assert kept.stdout == "", "only those files"


def test_raters_setting_takes_a_list_or_a_file_and_refuses_bad_ones(sweep, tmp_path):
    results, _ = sweep
    names = tmp_path / "raters.txt"
    names.write_text("# the study's raters\nann\n\n  bob  \n")
    assert rater_links.read_raters(str(names), judge.check_rater) == ["ann", "bob"]
    assert rater_links.read_raters(["ann", "bob"], judge.check_rater) == ["ann", "bob"]
    for value, words in [(["ann", "ann"], "more than once"), ([], "names nobody"), (["ann", ""], "a rater is required"),
                         (str(tmp_path / "missing.txt"), "no such file"), (5, "a list of names")]:
        with pytest.raises(UserError, match=words):
            rater_links.read_raters(value, judge.check_rater)
    base = OmegaConf.create({"results_dir": str(results), "rater": "alice", "raters": ["ann"], "host": "127.0.0.1",
                             "port": 0, "per_method_action": None, "seed": 0, "export": None})
    with pytest.raises(UserError, match="not both"):
        judge.serve(base)
    assert not (results / rater_links.JUDGE_SECRET).exists() and not (results / DB_FILE).exists()
