"""The Gradio app: the /generate endpoint through gradio_client, limits and readable errors, the app
without a model, Browse, the Contribute flow, the offline viewer assets, the Space card and the
`express4d demo` command.

The running app (a tiny untrained MDM pipeline saved to disk, a tiny procedural release) is built
once per test process by :func:`running_space`; tests/test_browser.py drives the same server.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest


gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from express4d_hf.core.constants import RECOMMENDED_GUIDANCE_RESCALE
from express4d_hf.livelink import FaceMotion, read_livelink_csv, write_livelink_csv

REPO = Path(__file__).resolve().parents[1]
PROMPT = "A person is winking with their left eye while smiling"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def tiny_assets() -> tuple[Path, Path, Path]:
    """``(root, models folder, release folder)``: a procedural release of 8 clips, and untrained tiny MDM and
    T2M-GPT pipelines in ``models/`` whose normalisers hold that data's stats (so noise looks like a face)."""
    from express4d_hf.data.hub import dataset_stats
    from express4d_hf.data.synthetic import synthesize_release
    from express4d_hf.models.mdm import MDMDenoiser
    from express4d_hf.models.normalizer import MotionNormalizer
    from express4d_hf.models.t2m_gpt import T2MGPT, MotionVQVAE
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline
    from express4d_hf.pipelines.t2m_gpt import Express4DT2MGPTPipeline

    root = Path(tempfile.mkdtemp(prefix="express4d-space-test-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    release = synthesize_release(root / "release", num_clips=8, participants=2, seed=0, progress=False, workers=1)
    stats = dataset_stats(release, cache_dir=root / "cache")
    stats.std = stats.std * 0.3  # untrained output is ~N(0, 1): keep it near the mean face
    denoiser = MDMDenoiser.from_preset("tiny", num_layers=1, hidden_size=64, ff_size=128)
    pipe = Express4DMDMPipeline.from_components(denoiser, normalizer=MotionNormalizer.from_stats(stats))
    pipe.save_pretrained(root / "models" / "mdm")
    gpt = Express4DT2MGPTPipeline.from_components(
        MotionVQVAE.from_preset("tiny", num_codes=32, code_dim=16, width=16, depth=1),
        T2MGPT.from_preset("tiny", num_codes=32, hidden_size=32, num_layers=1, num_heads=2),
        normalizer=MotionNormalizer.from_stats(stats), tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
    )  # fmt: skip
    gpt.save_pretrained(root / "models" / "t2m_gpt")
    return root, root / "models", Path(release)


@functools.cache
def running_space():
    """``(Express4DSpace, url)`` of the app launched on a free localhost port, closed at exit."""
    from express4d_hf.apps.space import build_app

    root, model, release = tiny_assets()
    app = build_app(models=[model], data=release, contributions_dir=root / "contributions", default_steps=2,
                    cache_dir=root / "cache", output_dir=root / "out")  # fmt: skip
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    atexit.register(app.close)
    return app, url


@pytest.fixture(scope="module")
def space():
    return running_space()


@pytest.fixture(scope="module")
def client(space):
    return gradio_client.Client(space[1], verbose=False)


# --- the /generate endpoint --------------------------------------------------------------------------
def test_generate_endpoint_needs_only_the_prompt(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]
    required = [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
    assert required == ["prompt"]
    assert [p["parameter_name"] for p in info["parameters"]][1:] == [
        "model", "duration_s", "num_inference_steps", "guidance_scale", "temperature", "seed"]  # fmt: skip
    assert len(info["returns"]) == 2  # the CSV and the JSON, nothing else

    csv_path, motion_json = client.predict(PROMPT, api_name="/generate")
    csv_motion = read_livelink_csv(csv_path)
    assert csv_motion.fps == 60 and csv_motion.num_frames == 240  # 4 s default at 60 fps
    assert csv_motion.valid.all() and np.isfinite(csv_motion.values).all()
    motion = FaceMotion.from_dict(motion_json)
    assert (motion.fps, motion.num_frames, motion.caption) == (20.0, 80, PROMPT)
    assert motion.metadata["model"] == "MDM" and motion.metadata["seed"] == 0
    assert motion.metadata["guidance_rescale"] == RECOMMENDED_GUIDANCE_RESCALE  # the measured best setting
    # The CSV is the JSON's motion upsampled: same curve shape.
    np.testing.assert_allclose(csv_motion.values[::3].mean(0), motion.values.mean(0), atol=0.05)


def test_generate_is_seeded_and_takes_every_argument(client):
    kwargs = {"model": "MDM", "duration_s": 2.5, "num_inference_steps": 3, "guidance_scale": 1.5, "temperature": 1.0,
              "api_name": "/generate"}
    _, a = client.predict(PROMPT, seed=7, **kwargs)
    _, b = client.predict(PROMPT, seed=7, **kwargs)
    _, c = client.predict(PROMPT, seed=8, **kwargs)
    assert len(a["values"]) == 50
    assert a["values"] == b["values"] and a["values"] != c["values"]


def test_generate_with_t2m_gpt(space, client):
    assert set(space[0].models) == {"MDM", "T2M-GPT"}  # both found in one folder of pipeline folders
    csv_path, motion_json = client.predict(PROMPT, model="T2M-GPT", duration_s=3.0, temperature=0.0, seed=3,
                                           api_name="/generate")  # fmt: skip
    assert read_livelink_csv(csv_path).num_frames == 180
    motion = FaceMotion.from_dict(motion_json)
    assert motion.num_frames == 60 and motion.metadata["model"] == "T2M-GPT"


@pytest.mark.parametrize(
    "args, message",
    [
        (("",), "prompt is empty"),
        (("x" * 301,), "at most 300 characters"),
        ((PROMPT, "GPT-5"), "not in the list of choices"),
        ((PROMPT, "MDM", 20.0), "greater than maximum value 9.8"),  # gradio checks the slider's range
        ((PROMPT, "MDM", 0.5), "less than minimum value 1"),
        ((PROMPT, "MDM", 4.0, 5000), "greater than maximum value 200"),
    ],
)
def test_generate_failures_are_readable_messages(client, args, message):
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        client.predict(*args, api_name="/generate")
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)


def test_uploads_are_limited_to_20_mb(space):
    import httpx

    big = b"Timecode,BlendShapeCount\n" + b"0" * (21 * 2**20)
    response = httpx.post(space[1] + "gradio_api/upload", files={"files": ("big.csv", big, "text/csv")}, timeout=60)
    assert response.status_code == 413


# --- no model -----------------------------------------------------------------------------------------
def test_app_without_a_model_starts_and_gives_no_shell_advice(tmp_path):
    from express4d_hf.apps.space import Express4DSpace, SpaceConfig

    app = Express4DSpace(SpaceConfig(models=[str(tmp_path)], contributions_dir=tmp_path / "c", output_dir=tmp_path / "o"))
    assert app.models == {} and "no model_index.json" in app.model_problems[0] and app.trainer is None
    notices = [c["props"].get("value") for c in app.blocks.config["components"] if c["props"].get("elem_id") == "e4d-no-model"]
    assert notices and "EXPRESS4D_MODELS" in notices[0] and "express4d train" not in notices[0]
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        local = gradio_client.Client(url, verbose=False)
        with pytest.raises(gradio_client.exceptions.AppError, match="No trained model is loaded") as error:
            local.predict(PROMPT, api_name="/generate")
        assert "express4d " not in str(error.value)
    finally:
        app.close()


# --- browse -------------------------------------------------------------------------------------------
def test_browse_searches_captions_and_renders_a_clip(space):
    app, _ = space
    everything = app.search_clips("")
    assert len(everything) == 8 and all(v.split(":")[0] in ("train", "test") for _, v in everything)
    word = everything[0][0].split("]")[1].split()[3]  # a word of the first caption
    found = app.search_clips(word.upper())
    assert found and all(word.lower() in label.lower() for label, _ in found)
    assert app.search_clips("no-such-word-anywhere") == []

    value, png, info = app.present_clip(everything[0][1])
    glb = Path(json.loads(value)["glb"].split("file=", 1)[1])
    assert glb.read_bytes()[:4] == b"glTF" and glb.with_name(glb.stem + ".LICENSE.txt").is_file()
    assert Path(png).stat().st_size > 1000 and "60 fps" in info
    with pytest.raises(ValueError, match="pick a clip"):
        app.present_clip("train:999")


# --- contribute -----------------------------------------------------------------------------------------
def _take(tmp_path, name, num_frames=180):
    t = np.linspace(0, 2 * np.pi, num_frames, dtype=np.float32)[:, None]
    values = np.zeros((num_frames, 61), np.float32)
    values[:, :52] = 0.3 + 0.2 * np.sin(t + np.arange(52, dtype=np.float32) / 8)
    path = tmp_path / name
    write_livelink_csv(FaceMotion(values, fps=60, start_timecode="09:00:00:45.000"), path, fps=None)
    return str(path)


def test_contribute_flow_in_the_app(space, tmp_path):
    from express4d_hf.apps.space import _user_errors

    app, _ = space
    rejected = _take(tmp_path, "short.csv", num_frames=30)
    report, png, kept = app.check_upload(rejected)
    assert "Rejected" in report and "Duration" in report and png is None and kept is None
    assert not Path(rejected).exists()  # rejected uploads are not kept

    accepted = _take(tmp_path, "good.csv")
    report, png, kept = app.check_upload(accepted)
    assert "Accepted" in report and Path(png).is_file() and kept == accepted

    submit = _user_errors(app.submit)
    with pytest.raises(gr.Error, match="consent"):
        submit(accepted, "A person is smiling", "", False, "**Your instruction:** A person is smiling")
    contributions = app.config.contributions_dir
    assert not (contributions / "train.txt").exists()
    message, cleared = submit(accepted, "A person is smiling", "Ada", True, "**Your instruction:** A person is smiling")
    take = re.search(r"`(contrib_[^`]+)`", message).group(1)
    assert cleared is None and not Path(accepted).exists()
    assert (contributions / "train.txt").read_text().split() == [take]
    meta = json.loads((contributions / "meta" / f"{take}.json").read_text())
    assert meta["instruction"] == "A person is smiling" and meta["contributor"] == "Ada"


# --- offline viewer, page, card and command -----------------------------------------------------------------
def test_viewer_is_served_by_the_app_without_any_cdn(space):
    import httpx

    from express4d_hf.apps.space import VIEWER_BUNDLE, VIEWER_DIR

    app, url = space
    module = httpx.get(url + app.module_url(), timeout=30)
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    code = module.text
    assert "GLTFLoader" in code or "glTF" in code
    assert not re.search(r"""(import|from)\s*\(?\s*["']https?:""", code)  # no module fetched from elsewhere
    build = json.loads((VIEWER_DIR / "BUILD.json").read_text())
    assert build["sha256"] == hashlib.sha256(VIEWER_BUNDLE.read_bytes()).hexdigest()  # built, not hand-edited
    assert (VIEWER_DIR / "LICENSE.three.txt").read_text().startswith("The MIT License")

    page = httpx.get(url, timeout=30).text
    assert "fonts.googleapis" not in page and "cdn.jsdelivr" not in page and "unpkg.com" not in page
    assert "Copyright (c) 2019 niels jansson" in json.dumps(app.blocks.config, default=str)  # the head's notice is visible


def test_space_card_front_matter():
    from huggingface_hub import RepoCard

    data = RepoCard.load(REPO / "spaces" / "express4d" / "README.md").data.to_dict()
    assert data["sdk"] == "gradio" and data["sdk_version"] == gr.__version__ == "6.31.0"
    assert (REPO / "spaces" / "express4d" / data["app_file"]).is_file()
    assert data["title"] and 0 < len(data["short_description"]) <= 60
    text = (REPO / "spaces" / "express4d" / "README.md").read_text()
    assert "your-username" not in text and "../" not in text  # no placeholders, images inside the folder
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all((REPO / "spaces" / "express4d" / image).is_file() for image in images)
    assert "models" not in data  # the zero-configuration Space: it trains the tiny baselines at start-up


def test_only_the_app_and_its_command_import_gradio():
    """Layering: gradio (and the app) stay at the top of the package, beside the command line."""
    package = REPO / "express4d_hf"
    allowed = {"space.py", "apps/space.py", "commands/demo.py"}
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        text = path.read_text()
        if rel not in allowed:
            assert not re.search(r"^\s*(import gradio|from gradio)", text, re.MULTILINE), f"{rel} imports gradio"
        if not rel.startswith("commands/"):  # the verbs that serve or build the Space sit above it
            assert not re.search(r"from \.+(apps\.)?space import|import express4d_hf\.(apps\.)?space", text), f"{rel} imports the app"


def test_demo_command_reports_bad_arguments(tmp_path, capsys):
    from express4d_hf.cli import main

    assert main(["demo", "--model", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["demo", "--model", str(tmp_path)]) == 2  # a folder without any pipeline
    assert "no MDM or T2M-GPT pipeline" in capsys.readouterr().err
