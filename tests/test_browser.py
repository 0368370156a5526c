"""A real browser drives the app: headless Debian Chromium (apt packages chromium + chromium-driver, set up
by .ci/run) over the Chrome DevTools Protocol. It types a prompt, clicks Generate, waits for the 3D
canvas to render the new animation, checks the canvas is not blank and the curves plot appears, checks
that the page fetched nothing from other sites; with EXPRESS4D_UPDATE_SCREENSHOT=1 it saves docs/space_screenshot.png.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian Chromium is not installed (apt-get install -y chromium chromium-driver)", allow_module_level=True)
websocket = pytest.importorskip("websocket", reason="the websocket-client package drives Chromium")
Image = pytest.importorskip("PIL.Image")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_space

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "space_screenshot.png"
PROMPT = "A person is raising their eyebrows in surprise and then frowning"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--window-size=1280,1500", "--force-device-scale-factor=1"]  # fmt: skip


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events buffered."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value {value!r})")

    def close(self):
        self.ws.close()


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="express4d-chromium-")
    process = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("Chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def viewer_state(selector: str) -> str:
    return (f"(() => {{ const v = document.querySelector('{selector} .e4d-viewer'); return v ? "
            "{state: v.dataset.state, frames: +(v.dataset.frames || 0), src: v.dataset.src || '', "
            "time: +(v.dataset.time || 0), duration: +(v.dataset.duration || 0)} : null; })()")  # fmt: skip


def canvas_pixels(tools: DevTools, selector: str) -> np.ndarray:
    data_url = tools.eval(f"document.querySelector('{selector} canvas').toDataURL('image/png')")
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGBA")
    return np.asarray(image, dtype=np.float32)


def test_generate_in_a_real_browser(browser):
    _, url = test_space.running_space()
    tools = browser
    tools.send("Network.enable")
    tools.send("Page.enable")
    tools.send("Page.navigate", url=url)
    generate_view = "#e4d-viewer-generate"

    # The page loads the viewer (three.js served by the app) and shows the head at rest.
    first = tools.wait_for(f"(() => {{ const s = {viewer_state(generate_view)}; return s && s.state === 'ready' && s; }})()",
                           60, "the rest-pose head")  # fmt: skip
    assert first["src"].endswith("facecap_head_rest.glb")

    tools.eval("document.querySelector('#e4d-prompt textarea').focus()")
    tools.send("Input.insertText", text=PROMPT)
    tools.eval("document.querySelector('#e4d-generate').click()")

    # The generated GLB replaces the rest pose and plays: frames render and time advances.
    state = tools.wait_for(
        f"(() => {{ const s = {viewer_state(generate_view)}; "
        "return s && s.state === 'ready' && s.src.includes('express4d_a-person') && s.frames > 10 && s; })()",
        60, "the generated animation to render",
    )  # fmt: skip
    assert abs(state["duration"] - 4.0) < 0.1  # the default 4 s
    later = tools.wait_for(f"(() => {{ const s = {viewer_state(generate_view)}; return s.frames > {state['frames'] + 10} && s; }})()",
                           20, "more frames")  # fmt: skip
    assert later["time"] != state["time"]

    # The curves plot appears.
    assert tools.wait_for("(() => { const img = document.querySelector('#e4d-curves img'); "
                          "return img && img.complete && img.naturalWidth; })()", 30, "the curves plot") > 200  # fmt: skip
    assert "Live Link Face CSV" in tools.eval("document.querySelector('#e4d-csv').innerText")
    assert ".glb" in tools.eval("document.querySelector('#e4d-glb').innerText")

    # The canvas is not blank: the head is drawn over the background.
    pixels = canvas_pixels(tools, generate_view)
    alpha = pixels[..., 3]
    drawn = pixels[alpha > 0][:, :3]
    assert 0.1 < (alpha > 0).mean() < 0.95, "the head should cover part of the canvas"
    assert drawn.std() > 10, "the drawn head should be shaded, not flat"

    # Pause and scrub: the time label follows the scrubber.
    tools.eval(f"document.querySelector('{generate_view} .e4d-play').click()")
    tools.eval(f"(() => {{ const s = document.querySelector('{generate_view} .e4d-scrub'); s.value = '2.5'; "
               "s.dispatchEvent(new Event('input')); })()")  # fmt: skip
    assert tools.eval(f"document.querySelector('{generate_view} .e4d-time').textContent").startswith("2.50 /")

    # Screenshot for the README, and a second not-blank check on the screen itself.
    rect = tools.eval(f"(() => {{ const r = document.querySelector('{generate_view} canvas').getBoundingClientRect(); "
                      "return [r.left, r.top, r.width, r.height]; })()")  # fmt: skip
    shot = base64.b64decode(tools.send("Page.captureScreenshot", format="png")["data"])
    if os.environ.get("EXPRESS4D_UPDATE_SCREENSHOT") == "1":  # a test run never rewrites tracked files by itself
        SCREENSHOT.write_bytes(shot)
    screen = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float32)
    left, top, width, height = (round(v) for v in rect)
    assert screen[top : top + height, left : left + width].std() > 10

    # Fully offline: every request went to the app itself (or stayed in the page).
    requested = [e["params"]["request"]["url"] for e in tools.events if e["method"] == "Network.requestWillBeSent"]
    foreign = [u for u in requested if not u.startswith((url.rstrip("/"), "data:", "blob:"))]
    assert requested and not foreign, f"requests to other sites: {foreign[:5]}"
