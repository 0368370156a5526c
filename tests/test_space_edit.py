"""The app's Edit and Timeline tabs: the functions behind them (on the tiny app of tests/test_space.py) and a real
browser that uploads a take, edits it and downloads the result (headless Debian Chromium, as tests/test_browser.py).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_space  # noqa: E402

from express4d_hf.core.arkit import REGIONS  # noqa: E402
from express4d_hf.core.motion import FaceMotion  # noqa: E402
from express4d_hf.livelink import read_livelink_csv, write_livelink_csv  # noqa: E402
from express4d_hf.pipelines.editing import channels_of  # noqa: E402


def take_csv(folder: Path, seconds: float = 3.0) -> tuple[Path, FaceMotion]:
    """A smooth 60 fps take written as a Live Link Face CSV."""
    t = np.arange(int(seconds * 60)) / 60
    values = 0.3 + 0.2 * np.sin(2 * np.pi * 0.7 * t[:, None] + np.linspace(0, 3, 61)[None])
    motion = FaceMotion(values.astype(np.float32), fps=60)
    path = folder / "take.csv"
    write_livelink_csv(motion, path, fps=60)
    return path, read_livelink_csv(path)


@pytest.fixture(scope="module")
def space():
    return test_space.running_space()


def test_edit_keeps_the_region_and_renders(space, tmp_path):
    app, _ = space
    path, take = take_csv(tmp_path)
    source, info, curves = app.load_edit_source(path=str(path))
    assert "3.00 s at 60 fps" in info and Path(curves).is_file()
    csv_path, motion_json, state = app.edit(source, "A person is smiling broadly", ["upper_face"], "", 2, 2.5, 0)
    edited = FaceMotion.from_dict(motion_json)
    upper = channels_of("upper_face")
    assert edited.num_frames == 60 and np.abs(edited.values[:, upper] - take.resample(20).values[:, upper]).max() <= 1e-4
    assert read_livelink_csv(csv_path).num_frames == 180
    viewer, png, glb = app.present_edit(state)
    assert json.loads(viewer)["glb"].endswith(".glb") and Path(png).stat().st_size > 10_000 and Path(glb).is_file()
    # spans only, and the last generation as the source
    csv_path, generated_json, generated = app.generate("A person is frowning", "MDM", 2.0, 2, 2.5, 1.0, 0)
    source, info, _ = app.load_edit_source(generated=generated)
    assert "last generation" in info
    _, motion_json, _ = app.edit(source, "A person is smiling", [], "0-0.5", 2, 2.5, 0)
    np.testing.assert_allclose(FaceMotion.from_dict(motion_json).values[:10],
                               FaceMotion.from_dict(generated_json).values[:10], atol=1e-4)  # fmt: skip


def test_edit_and_timeline_errors_are_messages(space, tmp_path):
    app, _ = space
    path, _ = take_csv(tmp_path)
    source, _, _ = app.load_edit_source(path=str(path))
    cases = [
        (lambda: app.edit(None, "A person smiles", ["upper_face"]), "no source yet"),
        (lambda: app.edit(source, "A person smiles", [], ""), "pick the regions to keep"),
        (lambda: app.edit(source, "A person smiles", ["mouthz"]), "valid regions: eyes"),
        (lambda: app.edit(source, "A person smiles", [], "2-5"), "within 0 to 3 s"),
        (lambda: app.edit(source, "  ", ["eyes"]), "empty"),
        (lambda: app.load_edit_source(), "upload a Live Link Face CSV"),
        (lambda: app.compose_timeline("three\tA person smiles"), "line 1: write SECONDS<TAB>INSTRUCTION"),
        (lambda: app.compose_timeline("70\tA person smiles"), "composes up to 60 s"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_timeline_composes_past_the_window(space):
    app, _ = space
    csv_path, motion_json, state = app.compose_timeline("4\tA person smiles\n8\tA person frowns\n", 1.0, 2, 2.5, 0)
    motion = FaceMotion.from_dict(motion_json)
    assert motion.num_frames == 240 and [s["prompt"] for s in motion.metadata["timeline"]] == ["A person smiles", "A person frowns"]
    assert read_livelink_csv(csv_path).num_frames == 720
    viewer, png, glb = app.present_generated(state)
    assert Path(glb).is_file()


# --- a real browser ---------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import websocket  # noqa: F401
except ImportError:
    websocket = None
if CHROMIUM and websocket:
    from test_browser import browser, viewer_state  # noqa: F401  (the module-scoped Chromium fixture)
else:

    @pytest.fixture(scope="module")
    def browser():
        pytest.skip("Debian Chromium and websocket-client are needed (apt-get install -y chromium chromium-driver)")


def test_edit_tab_in_a_real_browser(browser, space, tmp_path):
    """Upload a take, keep the upper face, edit, see the head play and the before/after curves, download the CSV."""
    _, url = space
    tools = browser
    path, take = take_csv(tmp_path)
    tools.send("Page.enable")
    tools.send("Page.navigate", url=url)
    tools.wait_for("document.querySelector('#e4d-generate') !== null", 60, "the app")
    tools.eval("[...document.querySelectorAll('button[role=tab]')].find(b => b.textContent.trim() === 'Edit').click()")
    tools.wait_for("(() => { const e = document.querySelector('#e4d-edit-upload'); return e && e.offsetParent !== null; })()",
                   20, "the Edit tab")  # fmt: skip

    # Upload the take through the file input, as a person choosing the file would.
    document = tools.send("DOM.getDocument", depth=-1, pierce=True)
    node = tools.send("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#e4d-edit-upload input[type=file]")
    tools.send("DOM.setFileInputFiles", files=[str(path)], nodeId=node["nodeId"])
    tools.wait_for("document.querySelector('#e4d-edit-source').innerText.includes('uploaded take')", 60, "the source")

    assert tools.eval("document.querySelector('#e4d-edit-keep').innerText").count("upper_face") >= 1  # the default
    tools.eval("document.querySelector('#e4d-edit-prompt textarea').focus()")
    tools.send("Input.insertText", text="A person is smiling broadly")
    tools.eval("document.querySelector('#e4d-edit-run').click()")

    edit_view = "#e4d-viewer-edit"
    state = tools.wait_for(
        f"(() => {{ const s = {viewer_state(edit_view)}; "
        "return s && s.state === 'ready' && s.src.includes('express4d_edit_') && s.frames > 5 && s; })()",
        90, "the edited animation to render",
    )  # fmt: skip
    assert abs(state["duration"] - 3.0) < 0.1
    assert tools.wait_for("(() => { const img = document.querySelector('#e4d-edit-curves img'); "
                          "return img && img.complete && img.naturalWidth; })()", 30, "the before/after curves") > 200  # fmt: skip

    # Download the edited CSV from its link: a 60 fps Live Link Face CSV whose upper face is the take's.
    href = tools.wait_for("(() => { const a = document.querySelector('#e4d-edit-csv a[href]'); return a && a.href; })()",
                          20, "the CSV download link")  # fmt: skip
    text = tools.eval(f"fetch({json.dumps(href)}).then(r => r.text())")
    downloaded = tmp_path / "downloaded.csv"
    downloaded.write_text(text)
    edited = read_livelink_csv(downloaded)
    assert edited.fps == 60 and edited.num_frames == 180
    upper = channels_of("upper_face")
    lower = [i for i in channels_of("lower_face") if i not in upper]
    # the CSV is the 20 fps edit upsampled: the kept channels follow the take, the others do not
    assert np.abs(edited.values[:, upper] - take.values[:, upper]).mean() < 0.02
    assert np.abs(edited.values[:, lower] - take.values[:, lower]).mean() > 0.05
    assert len(REGIONS["upper_face"]) == len(upper)
    time.sleep(0.1)


def test_edit_api_endpoint(space, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    _, url = space
    client = gradio_client.Client(url, verbose=False)
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/edit"]
    assert [p["parameter_name"] for p in info["parameters"]][:2] == ["take", "prompt"]
    path, take = take_csv(tmp_path)
    csv_path, motion_json = client.predict(gradio_client.handle_file(str(path)), "A person is smiling broadly",
                                           "upper_face, JawOpen", "0-0.5", 2, 2.5, 0, api_name="/edit")  # fmt: skip
    edited = FaceMotion.from_dict(motion_json)
    kept = channels_of(["upper_face", "JawOpen"])
    assert np.abs(edited.values[:, kept] - take.resample(20).values[:, kept]).max() <= 1e-4
    np.testing.assert_allclose(edited.values[:10], take.resample(20).values[:10], atol=1e-4)
    assert read_livelink_csv(csv_path).num_frames == 180
    with pytest.raises(Exception, match="valid regions"):
        client.predict(gradio_client.handle_file(str(path)), "A person smiles", "mouthz", "", 2, 2.5, 0, api_name="/edit")
