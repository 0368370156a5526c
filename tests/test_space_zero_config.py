"""A fresh Space with no model configured: it trains the tiny baselines on the embedded corpus in the background
(progress and expected wait in the page), keeps them in persistent storage, and generates once they are ready."""

from __future__ import annotations

import os


import pytest

gr = pytest.importorskip("gradio")

PROMPT = "A person is winking with their left eye while smiling"


def test_space_with_no_models_trains_tiny_baselines_then_generates(tmp_path, monkeypatch):
    from express4d_hf.data import hub
    from express4d_hf.apps.space import Express4DSpace, SpaceConfig, SpaceError

    monkeypatch.setattr(hub, "PROCEDURAL_NUM_CLIPS", 24)  # a small corpus: the test is about the flow
    monkeypatch.setattr(hub, "PROCEDURAL_PARTICIPANTS", 3)
    monkeypatch.setenv("EXPRESS4D_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPACE_ID", raising=False)
    (tmp_path / "data").mkdir()  # the Space's persistent storage
    config = SpaceConfig(contributions_dir=tmp_path / "c", output_dir=tmp_path / "o", train_steps=2,
                         persistent_dir=tmp_path / "data")  # fmt: skip
    monkeypatch.chdir(tmp_path)  # no ./runs to discover
    app = Express4DSpace(config)
    assert app.trainer is not None and app.models == {}
    status = app.training_status()
    assert "training its own small baselines" in status and "Expected wait" in status and "persistent storage" in status
    assert "express4d " not in status  # no shell advice on the page
    if "MDM" not in app.models:
        with pytest.raises(SpaceError, match="still training"):
            app.generate_motion(PROMPT, "MDM", duration_s=2.0, num_inference_steps=2)
    assert app.trainer.wait(timeout=600), app.trainer.error
    assert app.training_status() == "" and set(app.models) == {"MDM", "T2M-GPT"}
    assert str(tmp_path / "data" / "express4d") in app.models["MDM"]
    notices = [c["props"] for c in app.blocks.config["components"] if c["props"].get("elem_id") == "e4d-training"]
    assert notices  # the page has the progress notice (refreshed by a timer while training)
    for model in ("MDM", "T2M-GPT"):
        csv_path, motion, state = app.generate(PROMPT, model, duration_s=2.0, num_inference_steps=2, seed=1)
        assert motion["caption"] == PROMPT and os.path.getsize(csv_path) > 0

    # and through the served API, as a visitor's page calls it
    import socket

    gradio_client = pytest.importorskip("gradio_client")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(url, verbose=False)
        csv_path, motion = client.predict(PROMPT, "T2M-GPT", 2.0, 2, 2.5, 1.0, 0, api_name="/generate")
        assert motion["caption"] == PROMPT and os.path.getsize(csv_path) > 0
    finally:
        app.close()

    again = Express4DSpace(config)  # a restart: the stored models load at once, nothing trains
    assert again.trainer.state == "ready" and again.trainer._thread is None and set(again.models) == {"MDM", "T2M-GPT"}
    again.close()


def test_status_says_a_space_without_persistent_storage_retrains(tmp_path, monkeypatch):
    from express4d_hf.apps.space import BaselineTrainer, SpaceConfig

    monkeypatch.setenv("SPACE_ID", "me/express4d")
    monkeypatch.setenv("EXPRESS4D_CACHE", str(tmp_path / "cache"))
    trainer = BaselineTrainer(SpaceConfig(persistent_dir=tmp_path / "no-such-storage"), lambda label, folder: None)
    assert not trainer.persistent and str(tmp_path / "cache") in str(trainer.root)
    trainer.state = "training"
    status = trainer.status_markdown()
    assert "no persistent storage, so the models are trained again after every restart" in status
    assert "about" in status and "MDM" in status and "0 / 1500 steps" in status
    trainer.state = "ready"
    assert "trained again after every restart" in trainer.status_markdown()
