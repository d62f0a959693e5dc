"""report.html in a real headless Chromium: built from a tiny hand-made sweep, every picture loads and the page
logs no error."""

from chromium import browser, needs_chromium
from judge_fixtures import make_sweep
from selenium.webdriver.common.by import By

from actionbench import leaderboard

pytestmark = needs_chromium


def test_every_picture_of_the_report_loads_without_console_errors(tmp_path):
    make_sweep(tmp_path)
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=20"])
    chrome = browser()
    try:
        chrome.get((tmp_path / "report.html").as_uri())
        pictures = chrome.find_elements(By.TAG_NAME, "img")
        assert len(pictures) == 5  # bars, trade-off, heatmap, one grid per action
        broken = [p.get_attribute("src") for p in pictures
                  if not chrome.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", p)]
        assert broken == []
        assert [m for m in chrome.get_log("browser") if m["level"] == "SEVERE"] == []
        table = chrome.find_element(By.CSS_SELECTOR, ".wide")
        assert table.value_of_css_property("overflow-x") == "auto"
    finally:
        chrome.quit()
