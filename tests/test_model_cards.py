"""Model cards: the project's card (front matter with licence, datasets: and model-index; licence story) is what
``push_to_hub`` and ``save_pretrained(push_to_hub=True)`` upload, written before the upload. A recorder of
``HfApi`` calls stands in for the Hub."""

from __future__ import annotations



import json

import numpy as np
import pytest
import torch
import yaml

from express4d_hf.core.stats import NormStats
from express4d_hf.models.mdm import MDMDenoiser
from express4d_hf.models.normalizer import MotionNormalizer
from express4d_hf.models.t2m_gpt import T2MGPT, MotionVQVAE
from express4d_hf.pipelines import cards
from express4d_hf.pipelines.mdm import Express4DMDMPipeline
from express4d_hf.pipelines.t2m_gpt import Express4DT2MGPTPipeline
from express4d_hf.models.text import load_text_encoder
from hub_recorder import HubRecorder

SCORES = {
    "model": {"metrics": {
        "r_precision_top1": {"mean": 0.21, "ci95": 0.01, "values": [0.2, 0.22]},
        "r_precision_top2": {"mean": 0.33, "ci95": 0.01, "values": [0.33, 0.33]},
        "r_precision_top3": {"mean": 0.41, "ci95": 0.02, "values": [0.4, 0.42]},
        "fid": {"mean": 3.5, "ci95": 0.1, "values": [3.4, 3.6]},
        "mm_dist": {"mean": 4.2, "ci95": 0.05, "values": [4.2, 4.2]},
        "diversity": {"mean": 7.7, "ci95": 0.2, "values": [7.6, 7.8]},
    }, "seeds": [0, 1], "replications": 2, "aits_s": 0.1},
    "text_blind": {"metrics": {}, "seeds": [0, 1], "replications": 2},
    "protocol": {"replications": 2, "test_clips": 64, "evaluator": "runs/evaluator", "evaluator_fingerprint": "ev0123abcd"},
}  # fmt: skip
REAL = {"procedural": False, "repo_id": "me/express4d", "name": "Express4D", "fingerprint": "f" * 64}
PROCEDURAL = {"procedural": True, "repo_id": None, "name": "Express4D procedural stand-in", "fingerprint": "a" * 64}


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from express4d_hf.models.text import default_text_encoder_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(default_text_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_text_encoder(str(folder))


def _normalizer():
    rng = np.random.default_rng(0)
    return MotionNormalizer.from_stats(NormStats(rng.uniform(0, 0.3, 61), rng.uniform(0.05, 0.2, 61)))


@pytest.fixture(scope="module")
def mdm(text_encoder):
    torch.manual_seed(0)
    denoiser = MDMDenoiser.from_preset("tiny", num_layers=1, hidden_size=32, ff_size=64, num_heads=2, text_dim=32)
    tokenizer, encoder = text_encoder
    return Express4DMDMPipeline.from_components(denoiser, _normalizer(), text_encoder=encoder, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def t2m(text_encoder):
    torch.manual_seed(0)
    vqvae = MotionVQVAE.from_preset("tiny", num_codes=32, code_dim=16, width=32, depth=1)
    gpt = T2MGPT.from_preset("tiny", num_codes=32, hidden_size=32, num_layers=1, num_heads=2, text_dim=32)
    tokenizer, encoder = text_encoder
    return Express4DT2MGPTPipeline.from_components(vqvae, gpt, _normalizer(), text_encoder=encoder, tokenizer=tokenizer)


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_push_to_hub_uploads_the_projects_card_with_model_index(mdm, monkeypatch):
    recorder = HubRecorder.install(monkeypatch)
    mdm.card_data = {"dataset": REAL, "scores": SCORES, "metrics": "| table |"}
    mdm.push_to_hub("me/express4d-mdm")
    names = [c.name for c in recorder.calls if c.name != "HfApi"]
    assert names == ["create_repo", "upload_folder"]
    files = recorder.files("me/express4d-mdm")
    assert {"README.md", "card_data.json", "model_index.json"} <= set(files)
    assert any(name.startswith("denoiser/") for name in files)
    card = recorder.text("me/express4d-mdm", "README.md")
    assert "Express4D MDM baseline" in card and "Motion Diffusion Model" in card  # the project's text, not diffusers'
    assert 'from_pretrained("me/express4d-mdm")' in card and "path/to/this/folder" not in card
    meta = _front_matter(card)
    assert meta["license"] == "other" and meta["license_name"] == "express4d-research-only"
    assert meta["license_link"] == "https://huggingface.co/datasets/me/express4d"
    assert meta["datasets"] == ["me/express4d"] and meta["library_name"] == "diffusers"
    (index,) = meta["model-index"]
    (result,) = index["results"]
    assert result["dataset"]["type"] == "me/express4d" and result["dataset"]["split"] == "test"
    metrics = {m["type"]: m for m in result["metrics"]}
    assert list(metrics) == ["r_precision_top1", "r_precision_top2", "r_precision_top3", "fid", "mm_dist", "diversity"]
    assert metrics["fid"]["value"] == 3.5 and metrics["r_precision_top3"]["value"] == 0.41
    assert metrics["fid"]["args"]["evaluator_fingerprint"] == "ev0123abcd" and metrics["fid"]["args"]["ci95"] == 0.1
    assert "ev0123abcd" in card.split("---\n", 2)[2]  # and the text names it
    assert "Express4D data terms" in card and "non-commercial research use only" in card
    assert json.loads(files["card_data.json"])["scores"]["protocol"]["evaluator_fingerprint"] == "ev0123abcd"


def test_save_pretrained_push_to_hub_writes_the_card_before_uploading(t2m, tmp_path, monkeypatch):
    recorder = HubRecorder.install(monkeypatch)
    seen = {}
    original = recorder._upload_folder

    def upload(*args, **kwargs):  # what is in the folder at the moment of the upload
        seen["files"] = sorted(p.name for p in (tmp_path / "t2m").iterdir())
        return original(*args, **kwargs)

    recorder._upload_folder = upload
    t2m.card_data = {"dataset": PROCEDURAL}
    t2m.save_pretrained(tmp_path / "t2m", push_to_hub=True, repo_id="me/t2m-stand-in", private=True)
    assert {"README.md", "card_data.json", "model_index.json"} <= set(seen["files"])
    assert recorder.call("create_repo").kwargs["private"] is True
    card = recorder.text("me/t2m-stand-in", "README.md")
    assert "not a diffusion model" in card and (tmp_path / "t2m" / "README.md").read_text() == card
    meta = _front_matter(card)
    assert meta["license"] == "apache-2.0" and "license_name" not in meta  # procedural corpus: the project's licence
    assert "model-index" not in meta and "datasets" not in meta  # not scored, no Hub dataset
    assert "procedural stand-in corpus" in card and "Apache-2.0, the project's own" in card


def test_licence_story_is_one_for_both_pipelines(mdm, t2m, tmp_path):
    """Same training data -> same licence, whichever the model; unrecorded data counts as the real data."""
    for dataset, licence in ((REAL, "other"), (PROCEDURAL, "apache-2.0"), (None, "other")):
        found = set()
        for pipe, name in ((mdm, "mdm"), (t2m, "t2m")):
            pipe.card_data = {"dataset": dataset} if dataset else {}
            pipe.save_pretrained(tmp_path / f"{name}-{licence}-{dataset is None}")
            card = (tmp_path / f"{name}-{licence}-{dataset is None}" / "README.md").read_text()
            found.add(_front_matter(card)["license"])
            assert "$" not in card.split("```")[0]
        assert found == {licence}
    assert "not recorded, so they are treated as trained on the **Express4D captures**" in card


def test_training_data_card_reads_the_build_manifest(tmp_path):
    from express4d_hf.data.hub import build_dataset
    from express4d_hf.data.synthetic import synthesize_release

    release = synthesize_release(tmp_path / "rel", num_clips=6, participants=2, seed=0, progress=False)
    built = build_dataset(release, tmp_path / "ds", progress=False)
    entry = cards.training_data_card(built)
    assert entry["procedural"] is True and len(entry["fingerprint"]) == 64 and entry["repo_id"] is None
    assert cards.training_data_card(tmp_path / "missing")["procedural"] is False  # unreadable: the safe side


# --- callback_on_step_end (diffusers' semantics) ----------------------------------------------------------
def test_mdm_callback_on_step_end_sees_every_step_and_can_replace_latents(mdm):
    from diffusers.callbacks import PipelineCallback

    from express4d_hf.pipelines.mdm import make_scheduler

    mdm.scheduler = make_scheduler("ddim", mdm.scheduler.config)
    mdm.set_progress_bar_config(disable=True)
    seen = []

    def record(pipe, step, timestep, kwargs):
        assert pipe is mdm and set(kwargs) == {"latents", "x0"}
        seen.append((step, int(timestep), tuple(kwargs["latents"].shape)))
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == 3 else {}

    out = mdm("A person is smiling", num_frames=24, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
              output_type="latent", callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents", "x0"])  # fmt: skip
    assert [s for s, _, _ in seen] == [0, 1, 2, 3] and all(shape == (1, 24, 61) for _, _, shape in seen)
    assert [t for _, t, _ in seen] == [int(t) for t in mdm.scheduler.timesteps]
    assert torch.count_nonzero(out.motions) == 0  # the last step's latents were replaced

    def stop(pipe, step, timestep, kwargs):
        seen.append(step)
        pipe._interrupt = step == 1
        return kwargs

    seen.clear()
    mdm("A person is smiling", num_frames=24, num_inference_steps=4, callback_on_step_end=stop)
    assert seen == [0, 1]  # interrupted: the remaining steps are skipped

    class Counter(PipelineCallback):
        tensor_inputs = ["mask"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            seen.append(int(callback_kwargs["mask"].sum()))
            return callback_kwargs

    seen.clear()
    mdm("A person is smiling", num_frames=24, num_inference_steps=2, callback_on_step_end=Counter())
    assert seen == [24, 24]
    with pytest.raises(ValueError, match="passes"):
        mdm("A person is smiling", num_frames=24, num_inference_steps=2, callback_on_step_end=record,
            callback_on_step_end_tensor_inputs=["noise_pred"])  # fmt: skip


def test_t2m_gpt_callback_runs_per_token_with_the_tokens_so_far(t2m):
    seen = []

    def record(pipe, step, timestep, kwargs):
        seen.append((step, tuple(kwargs["tokens"].shape)))
        if step == 2:  # steer: every row's codes so far become code 5
            return {"tokens": torch.full_like(kwargs["tokens"], 5)}
        return {}

    out = t2m(["A person is smiling", "A person blinks"], num_frames=40, generator=torch.Generator().manual_seed(0),
              output_type="codes", callback_on_step_end=record)  # fmt: skip
    assert seen == [(step, (2, step + 1)) for step in range(10)]  # 40 frames = 10 codes of 4 frames
    assert all(c[:3].tolist() == [5, 5, 5] for c in out)

    def stop(pipe, step, timestep, kwargs):
        pipe._interrupt = step == 5
        return {}

    motions = t2m("A person is smiling", num_frames=80, callback_on_step_end=stop).motions
    assert motions[0].num_frames == 24  # ended at its 6 codes
