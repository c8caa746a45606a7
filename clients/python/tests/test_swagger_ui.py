"""The API explorer at /docs (Swagger UI, its assets compiled into the
binary) loads in headless Chromium with no network beyond the server, and
"Try it out" on POST /v1/classify classifies a clause.

Chromium is Debian's `chromium` (scripts/test.sh installs it as root and sets
LEXTRAL_REQUIRE_CHROMIUM=1, so CI cannot skip this test); `LEXTRAL_CHROMIUM`
names another binary. The test drives it over the DevTools protocol.
"""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest
import websocket


def chromium():
    named = os.environ.get("LEXTRAL_CHROMIUM")
    if named:
        return named
    for candidate in ["chromium", "chromium-browser", "google-chrome"]:
        found = shutil.which(candidate)
        if found:
            return found
    if os.environ.get("LEXTRAL_REQUIRE_CHROMIUM") == "1":
        pytest.fail("LEXTRAL_REQUIRE_CHROMIUM=1 but no chromium found")
    pytest.skip("chromium not found (apt-get install chromium)")


class Browser:
    """One headless Chromium page, driven by DevTools protocol calls."""

    def __init__(self, binary):
        self.profile = tempfile.mkdtemp(prefix="lextral-chromium-")
        # The flags keep Chromium from calling Google's hosts on a closed network.
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = pathlib.Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.process.poll() is None, "chromium exited"
            assert time.time() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.call("Runtime.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression, what, timeout=60):
        deadline = time.time() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def close(self):
        try:
            self.socket.close()
        finally:
            self.process.kill()
            self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture()
def browser():
    page = Browser(chromium())
    yield page
    page.close()


def test_docs_load_and_try_it_out_classifies(stack, browser):
    base = f"http://{stack.http}"
    browser.call("Page.navigate", url=f"{base}/docs")
    # Swagger UI rendered the document: its title and the classify operation.
    title = browser.wait_for(
        "document.querySelector('.info .title') && document.querySelector('.info .title').textContent",
        "the API title")
    assert "Lextral" in title
    operation = "[id^='operations-'][id$='-classify']"
    browser.wait_for(f"!!document.querySelector(\"{operation}\")", "the classify operation")
    # Open it, press "Try it out", keep the example body, press "Execute".
    browser.evaluate(f"document.querySelector(\"{operation} button.opblock-summary-control\").click()")
    browser.wait_for(f"!!document.querySelector(\"{operation} .try-out__btn\")", "the Try it out button")
    # Pressed until it turns into "Cancel" (a click before the panel settles is lost).
    browser.wait_for(
        f"(() => {{ const b = document.querySelector(\"{operation} .try-out__btn\");"
        " if (b.textContent.trim() === 'Cancel') return true; b.click(); return false; })()",
        "Try it out to take")
    body = browser.wait_for(f"document.querySelector(\"{operation} textarea.body-param__text\") && "
                            f"document.querySelector(\"{operation} textarea.body-param__text\").value",
                            "the example request body")
    assert json.loads(body)["strategy"] == "knn", body
    browser.evaluate(f"document.querySelector(\"{operation} .execute\").click()")
    status = browser.wait_for(
        f"(() => {{ const cell = document.querySelector(\"{operation} .live-responses-table tbody .response-col_status\");"
        " return cell && cell.textContent.trim(); })()",
        "the live response")
    assert status.startswith("200"), status
    answer = browser.evaluate(
        f"document.querySelector(\"{operation} .live-responses-table tbody .response-col_description pre\").textContent")
    result = json.loads(answer)["results"][0]
    assert result["label"] in {row["label"] for row in stack.train}, result
    assert 0 < result["confidence"] <= 1, result
