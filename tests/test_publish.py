"""The publish flow end to end with a recorder standing in for the Hub: `express4d model push` (the project's card)
and `express4d space build` / `space push` (a complete, pushable Space folder)."""

from __future__ import annotations

import os


import json

import pytest
import torch
import yaml

from express4d_hf.cli import main
from hub_recorder import HubRecorder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from express4d_hf.models.mdm import MDMDenoiser
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("runs") / "mdm"
    pipe = Express4DMDMPipeline.from_components(MDMDenoiser.from_preset("tiny", num_layers=1, hidden_size=32, ff_size=64))
    pipe.card_data = {"dataset": {"procedural": True, "repo_id": None, "name": "Express4D procedural stand-in",
                                  "fingerprint": "b" * 64}}  # fmt: skip
    pipe.save_pretrained(folder)
    (folder / "training_metadata.json").write_text("{}\n")
    (folder / "checkpoints").mkdir()  # stays local
    (folder / "checkpoints" / "step_1.safetensors").write_bytes(b"x")
    return folder


def test_model_push_dry_run_and_upload(model_dir, monkeypatch, capsys):
    assert main(["model", "push", str(model_dir), "me/express4d-mdm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Dry run: nothing uploaded" in out and "licence apache-2.0" in out and "model-index: none (not scored)" in out
    recorder = HubRecorder.install(monkeypatch)
    assert main(["model", "push", str(model_dir), "me/express4d-mdm", "--dataset", "me/express4d"]) == 0
    files = recorder.files("me/express4d-mdm")
    assert "training_metadata.json" in files and not any(n.startswith("checkpoints") for n in files)
    card = recorder.text("me/express4d-mdm", "README.md")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["datasets"] == ["me/express4d"] and front["license"] == "apache-2.0"  # still the procedural corpus
    assert 'from_pretrained("me/express4d-mdm")' in card


def test_space_build_writes_a_complete_pushable_folder(model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "space"
    assert main(["space", "build", str(out), "--models", "me/express4d-t2m-gpt", "--models", str(model_dir),
                 "--data", "me/express4d"]) == 0  # fmt: skip
    assert "wrote the Space folder" in capsys.readouterr().out
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "app.py", "requirements.txt", "screenshot.jpg", "express4d_hf/space.py",
            "express4d_hf/hub_cards/space_readme.md", "models/mdm/model_index.json"} <= names  # fmt: skip
    assert not any("__pycache__" in n for n in names)
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["sdk_version"] and front["app_file"] == "app.py"
    assert front["models"] == ["me/express4d-t2m-gpt"] and front["datasets"] == ["me/express4d"]
    assert "your-username" not in card and "](screenshot.jpg)" in card and "../" not in card
    requirements = (out / "requirements.txt").read_text().splitlines()
    pins = [line for line in requirements if line and not line.startswith(("#", "--"))]
    assert pins and all("==" in line for line in pins) and any(line.startswith("torch==") for line in pins)
    app = (out / "app.py").read_text()
    assert "'me/express4d-t2m-gpt'" in app and "'models/mdm'" in app and "'me/express4d'" in app
    compile(app, "app.py", "exec")

    assert main(["space", "push", str(out), "me/express4d-space", "--dry-run"]) == 0
    assert "Dry run: nothing uploaded" in capsys.readouterr().out
    recorder = HubRecorder.install(monkeypatch)
    assert main(["space", "push", str(out), "me/express4d-space"]) == 0
    create = recorder.call("create_repo")
    assert create.kwargs["repo_type"] == "space" and create.kwargs["space_sdk"] == "gradio"
    uploaded = recorder.files("me/express4d-space")
    assert {"README.md", "app.py", "requirements.txt", "screenshot.jpg", "models/mdm/model_index.json"} <= set(uploaded)
    assert 'Client("me/express4d-space")' in recorder.text("me/express4d-space", "README.md")

    assert main(["space", "build", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["space", "build", str(tmp_path / "zero")]) == 0  # no models: the zero-config Space
    zero = (tmp_path / "zero" / "README.md").read_text()
    assert "models" not in yaml.safe_load(zero.split("---\n")[1]) and "trains the tiny MDM and T2M-GPT" in zero


def test_space_folder_app_starts(model_dir, tmp_path, monkeypatch):
    """The written app.py imports the package copy next to it and configures the app from its defaults."""
    pytest.importorskip("gradio")
    import subprocess
    import sys

    out = tmp_path / "space"
    assert main(["space", "build", str(out), "--models", str(model_dir)]) == 0
    code = ("import runpy, sys; scope = runpy.run_path('app.py'); app = scope['app']; "
            "import express4d_hf; assert express4d_hf.__file__.startswith(sys.argv[1]), express4d_hf.__file__; "
            "print(sorted(app.models)); app.close()")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EXPRESS4D_MODELS")}
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=out, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')) == ["MDM"]


def test_model_push_with_evaluate_results(model_dir, tmp_path, monkeypatch):
    """`express4d evaluate`'s results.json becomes the card's model-index, with its evaluator fingerprint."""
    metrics = {k: {"mean": v, "ci95": 0.01, "values": [v]} for k, v in
               {"r_precision_top1": 0.3, "r_precision_top2": 0.45, "r_precision_top3": 0.55, "fid": 2.5,
                "mm_dist": 3.1, "diversity": 9.0}.items()}  # fmt: skip
    results = {"rows": [{"model": "real", "title": "Real", "metrics": metrics, "seeds": [0], "replications": 1},
                        {"model": "model", "title": "MDM (mdm)", "metrics": metrics, "seeds": [0], "replications": 20,
                         "info": {"evaluator": "feedc0ffee12"}}],
               "meta": {"data": {"test_clips_used": 224}}}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "results.md").write_text("| Method | R@1 |\n|---|---|\n| MDM | 0.300 |\n")
    recorder = HubRecorder.install(monkeypatch)
    assert main(["model", "push", str(model_dir), "me/mdm", "--scores", str(tmp_path / "results.json")]) == 0
    card = recorder.text("me/mdm", "README.md")
    front = yaml.safe_load(card.split("---\n")[1])
    entries = front["model-index"][0]["results"][0]["metrics"]
    assert len(entries) == 6 and {m["args"]["evaluator_fingerprint"] for m in entries} == {"feedc0ffee12"}
    assert {m["args"]["replications"] for m in entries} == {20} and "| MDM | 0.300 |" in card
    assert main(["model", "push", str(model_dir), "me/mdm", "--scores", str(tmp_path / "missing.json")]) == 2
