"""The judging page in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium)
against `python -m actionbench.judge` run as its own process: keyboard and mouse, undo, reload and resume,
two raters at once, and a server killed with SIGKILL mid-study."""

import http.client
import json
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chromium import browser, needs_chromium
from judge_fixtures import METHODS, make_sweep
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from actionbench.judge import image_key
from actionbench.votes import DB_FILE

REPO = Path(__file__).resolve().parents[1]
pytestmark = needs_chromium


class Server:
    """`python -m actionbench.judge` in a process of its own, on a free port."""

    def __init__(self, results: Path, raters: str | None = None):
        who = f"raters={raters}" if raters else "rater=alice"
        self.process = subprocess.Popen([sys.executable, "-m", "actionbench.judge", f"results_dir={results}",
                                         who, "port=0"], cwd=REPO, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.said, self.links = [], {}  # with raters: {name: the link printed for them}
        for line in self.process.stdout:
            self.said.append(line)
            if found := re.search(r"^  (\S+): (http://127\.0\.0\.1:\d+/\?rater=\S+)$", line):
                self.links[found[1]] = found[2]
            if "Ctrl-C stops" in line and (found := re.search(r"(http://127\.0\.0\.1:(\d+))/", "".join(self.said))):
                self.base, self.port = found[1], int(found[2])
                return
        raise AssertionError("the server did not start:\n" + "".join(self.said))

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def stop(self, sig=signal.SIGTERM):
        self.process.send_signal(sig)
        self.process.wait(timeout=10)


@pytest.fixture
def study(tmp_path):
    make_sweep(tmp_path)
    servers = []

    def start(raters: str | None = None) -> Server:
        servers.append(Server(tmp_path, raters))
        return servers[-1]

    yield tmp_path, start
    for server in servers:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def driver():
    chrome = browser()
    yield chrome
    chrome.quit()


def judged(driver, n: int) -> str:
    """Wait until the page says n images are judged and shows its next image; that image's key."""
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "count").text.startswith(f"{n} judged")
                                    and d.find_element(By.ID, "image").get_attribute("data-key"))
    return driver.find_element(By.ID, "image").get_attribute("data-key")


def press(driver, *keys: str):
    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def stored(results: Path) -> dict:
    """{(rater, image key): (action, subject)} of every row in the database."""
    with sqlite3.connect(results / DB_FILE) as db:
        return {(r, image_key(d, f)): (a, s) for r, d, f, a, s in
                db.execute("SELECT rater, digest, file, action_right, subject_right FROM judgments")}


def test_keyboard_mouse_undo_reload_resume(study, driver):
    results, start = study
    server = start()
    assert "bound to 127.0.0.1: this machine only" in "".join(server.said)
    driver.get(f"{server.base}/?rater=alice")
    first = judged(driver, 0)
    assert driver.find_element(By.ID, "subject").text in ("a dog", "Barack Obama", "a chef")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#exemplars img")) == 3
    assert "Y" in driver.find_element(By.ID, "q-action").text, "the shortcuts are shown on the page"
    press(driver, "y", "n")  # action yes, subject no
    second = judged(driver, 1)
    driver.find_element(By.CSS_SELECTOR, '#q-action button[data-yes="true"]').click()  # the mouse, then a key
    press(driver, "y")
    third = judged(driver, 2)
    press(driver, "n", "u", "n", "n")  # a half answer undone on the image itself, then no, no
    fourth = judged(driver, 3)
    press(driver, "y", "y")
    assert judged(driver, 4) != fourth
    press(driver, "u")  # undo the last answer: the fourth image is back
    assert judged(driver, 3) == fourth
    driver.refresh()
    assert judged(driver, 3) == fourth, "a reload resumes at the first image not answered"
    assert stored(results) == {("alice", first): (1, 0), ("alice", second): (1, 1), ("alice", third): (0, 0)}
    source = driver.page_source
    for secret in (*METHODS, "runs/", str(results), "seed0"):
        assert secret not in source


def test_two_raters_at_once_lose_no_answer(study, driver):
    results, start = study
    server = start()
    other = browser()
    try:
        def rate(chrome, rater: str, keys: str) -> None:
            chrome.get(f"{server.base}/?rater={rater}")
            for n in range(5):
                judged(chrome, n)
                press(chrome, *keys)
            judged(chrome, 5)

        with ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(rate, driver, "ann", "yn"), pool.submit(rate, other, "ben", "ny")]:
                done.result()
    finally:
        other.quit()
    votes = stored(results)
    assert len(votes) == 10 and sorted(r for r, _ in votes) == ["ann"] * 5 + ["ben"] * 5
    assert {v for (r, _), v in votes.items() if r == "ann"} == {(1, 0)} and {v for (r, _), v in votes.items() if r == "ben"} == {(0, 1)}


def test_sigkill_loses_no_committed_answer_and_bad_paths_are_refused(study, driver):
    results, start = study
    server = start()
    state = server.get("/api/next?rater=alice")
    for _ in range(4):
        state = server.post("/api/answer", {"rater": "alice", "key": state["image"]["key"], "action": True,
                                            "subject": True, "seconds": 0.5})
    server.stop(signal.SIGKILL)
    assert server.process.returncode == -signal.SIGKILL and len(stored(results)) == 4
    server = start()
    driver.get(f"{server.base}/?rater=alice")
    assert judged(driver, 4) == state["image"]["key"], "the page resumes after the restart"
    for path in ("/page/../../conf/judge.yaml", "/page/..%2f..%2fjudge.py", "/../../../etc/passwd",
                 "/image/../../record.json", "/image/..%2F..%2Frecord.json", "/exemplar/0/../../../judge.py"):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", path)  # sent as written: no client-side clean-up of the path
        assert connection.getresponse().status == 404, path
        connection.close()
    assert len(stored(results)) == 4


def test_a_raters_link_opens_their_page_and_works_after_a_restart(study, driver):
    results, start = study
    server = start("[ann,bob]")
    links = server.links
    assert sorted(links) == ["ann", "bob"] and all("&token=" in link for link in links.values())
    assert (results / "judge_links.txt").read_text() == "".join(f"{name}\t{link}\n" for name, link in links.items())
    driver.get(links["ann"])
    first = judged(driver, 0)
    press(driver, "y", "n")
    judged(driver, 1)
    assert stored(results) == {("ann", first): (1, 0)}
    driver.get(f"{server.base}/?rater=ann")  # her name without her token
    WebDriverWait(driver, 15).until(lambda d: "link of their own" in d.find_element(By.ID, "error").text)
    assert driver.find_element(By.ID, "judge").get_attribute("hidden") is not None, "no image to judge"
    server.stop()
    old, server = server.base, start("[ann,bob]")  # on another free port: a real restart keeps port=
    assert server.links == {name: link.replace(old, server.base) for name, link in links.items()}, "the same tokens"
    driver.get(links["ann"].replace(old, server.base))
    judged(driver, 1)
    press(driver, "n", "n")
    judged(driver, 2)
    assert len(stored(results)) == 2 and {r for r, _ in stored(results)} == {"ann"}


def visible(driver) -> set[str]:
    """The ids of the page's parts that a rater sees (displayed, not merely present in the page)."""
    parts = ("who", "judge", "finished", "error", "image", "subject", "q-subject")
    return {part for part in parts if driver.find_element(By.ID, part).is_displayed()}


def test_the_page_shows_only_what_applies(study, driver):
    _, start = study
    server = start("[ann]")
    driver.get(f"{server.base}/")  # the bare address: the name form and nothing of a study
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "who").is_displayed())
    assert visible(driver) == {"who"}
    assert not any(b.is_displayed() for b in driver.find_elements(By.CSS_SELECTOR, "button.undo"))
    driver.get(server.links["ann"].replace("token=", "token=x"))  # a bad token: the message alone
    WebDriverWait(driver, 15).until(lambda d: "link of their own" in d.find_element(By.ID, "error").text)
    assert visible(driver) == {"error"}
    driver.get(server.links["ann"])
    judged(driver, 0)
    total = int(re.search(r"/ (\d+) to judge", driver.find_element(By.ID, "count").text)[1])
    for n in range(total):
        judged(driver, n)
        assert visible(driver) == {"judge", "image", "subject", "q-subject"}
        press(driver, "y", "y")
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "count").text == f"{total} judged / 0 to judge")
    assert visible(driver) == {"finished"}, "after the last image: the end screen alone"
    assert [b.is_displayed() for b in driver.find_elements(By.CSS_SELECTOR, "button.undo")] == [False, True]
