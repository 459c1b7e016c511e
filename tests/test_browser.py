"""The console in a real browser: headless Chromium (Selenium) against `streamlit run app.py`.

Starts a sandbox session, sends two messages, reloads the page, and finds the same session
with both replies. The agent is a scripted OpenAI-compatible server on 127.0.0.1, so the test
needs no key and no model weights. Chromium and its driver are the Debian packages
(`apt-get install chromium chromium-driver`, done by .ci/run); without them the test is skipped.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_llm import FakeAgent, write_registry

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


@pytest.fixture
def console(tmp_path, csforge_home):
    """`streamlit run app.py` on a free 127.0.0.1 port, over a registry holding one scripted agent."""
    with FakeAgent(["Reply one: your parcel left the warehouse.", "Reply two: it arrives on Friday."]) as agent:
        registry = write_registry(tmp_path / "registry.yaml", [
            {"name": "scripted-agent", "type": "base", "base_model": "scripted", "access_point": agent.url}])
        port = _free_port()
        env = {**os.environ, "CSFORGE_REGISTRY": str(registry), "CSFORGE_HOME": str(csforge_home)}
        log = open(tmp_path / "streamlit.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc)
            yield f"http://127.0.0.1:{port}", agent
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_text(driver, text: str, timeout: float = 90) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element("tag name", "body").text,
                                         message=f"'{text}' never appeared")


def _send(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    box = WebDriverWait(driver, 60).until(
        lambda d: d.find_element("css selector", "[data-testid='stChatInputTextArea']"))
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_sandbox_session_survives_a_reload(console, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    base, agent = console
    browser.get(f"{base}/Sandbox")
    _wait_text(browser, "Start session")
    links = browser.find_elements("css selector", "[data-testid='stSidebar'] [data-testid='stPageLink']")
    nav = [link.text.splitlines()[-1].strip() for link in links]
    assert nav == ["Home", "Data", "Factory", "Sandbox", "Scorecard", "Costs"], nav  # not "app"
    assert not browser.find_elements("css selector", "[data-testid='stSidebarNav']")
    tester = browser.find_element("css selector", "input[aria-label='Tester']")
    tester.send_keys("ana")
    browser.find_element("xpath", "//button[.//p[text()='Start session']]").click()
    WebDriverWait(browser, 60).until(lambda d: "session=" in d.current_url, message="no ?session= in the URL")
    session_id = browser.current_url.split("session=")[1].split("&")[0]

    _send(browser, "Where is my parcel?")
    _wait_text(browser, "Reply one: your parcel left the warehouse.")
    _send(browser, "When will it arrive?")
    _wait_text(browser, "Reply two: it arrives on Friday.")
    browser.save_screenshot(str(tmp_path / "sandbox.png"))

    browser.refresh()
    for text in ("Where is my parcel?", "Reply one: your parcel left the warehouse.",
                 "When will it arrive?", "Reply two: it arrives on Friday.", f"?session={session_id}"):
        _wait_text(browser, text)
    assert f"session={session_id}" in browser.current_url
    assert len(agent.requests) == 2  # one call per message: the reload re-sent nothing
    assert [m["content"] for m in agent.requests[1]["messages"] if m["role"] == "user"] == [
        "Where is my parcel?", "When will it arrive?"]
