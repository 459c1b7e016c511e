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
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class _SlowStream(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that streams one word every 0.3 s (for the Stop button)."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(200):
            delta = {"content": f"w{i} "} if i < 199 else {}
            chunk = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "slow",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None if i < 199 else "stop"}]}
            try:
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.3)
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def console(tmp_path, csforge_home):
    """`streamlit run app.py` on a free 127.0.0.1 port, over a registry holding a scripted agent
    and a slowly streaming one."""
    slow = ThreadingHTTPServer(("127.0.0.1", 0), _SlowStream)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    with FakeAgent(["Reply one: your parcel left the warehouse.", "Reply two: it arrives on Friday."]) as agent:
        registry = write_registry(tmp_path / "registry.yaml", [
            {"name": "scripted-agent", "type": "base", "base_model": "scripted", "access_point": agent.url},
            {"name": "slow-agent", "type": "base", "base_model": "scripted",
             "access_point": f"http://127.0.0.1:{slow.server_port}/v1"}])
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
            slow.shutdown()


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
    tester = WebDriverWait(browser, 60).until(  # the form's inputs can render after its button's label
        lambda d: d.find_element("css selector", "input[aria-label='Tester']"))
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


def test_stop_keeps_the_partial_reply(console, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    from core import sandbox

    base, _ = console
    session = sandbox.create_session(["slow-agent"], tester="ana")
    browser.get(f"{base}/Sandbox?session={session.id}")  # a link to a session opens it
    _wait_text(browser, session.title)
    _send(browser, "Tell me everything")
    _wait_text(browser, "w3")
    browser.find_element("xpath", "//button[.//p[contains(text(), 'Stop')]]").click()
    _wait_text(browser, "stopped by the tester")
    WebDriverWait(browser, 10).until(lambda d: not d.find_elements("xpath", "//button[.//p[contains(text(), 'Stop')]]"))
    replies = [m for m in sandbox.messages(session.id) if m.role == "assistant"]
    assert len(replies) == 1 and replies[0].error == "stopped by the tester"
    assert replies[0].content.startswith("w0 w1 w2 w3") and "w198" not in replies[0].content
    assert "Retry" not in browser.find_element("tag name", "body").text  # not shown as unanswered


def test_a_reload_mid_reply_leaves_the_message_to_retry(console, browser):
    """A reload is not a Stop: the partial reply is kept, labelled interrupted, and Retry is offered."""
    from core import sandbox

    base, _ = console
    session = sandbox.create_session(["slow-agent"], tester="ana")
    browser.get(f"{base}/Sandbox?session={session.id}")
    _wait_text(browser, session.title)
    _send(browser, "Tell me everything")
    _wait_text(browser, "w3")
    browser.refresh()
    _wait_text(browser, "interrupted before the end")
    _wait_text(browser, "Retry")
    replies = [m for m in sandbox.messages(session.id) if m.role == "assistant"]
    assert len(replies) == 1 and replies[0].error == sandbox.INTERRUPTED
    assert replies[0].content.startswith("w0 w1 w2 w3") and "w198" not in replies[0].content
    assert list(sandbox.pending(session.id)) == ["slow-agent"]
