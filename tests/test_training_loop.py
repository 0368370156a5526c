"""The one training loop: exact resume, settings precedence, accumulation, batches by index, compile, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from express4d_hf.training.batches import CaptionVocabulary, CodeBatches, MotionBatches
from express4d_hf.training.common import (
    LoopConfig,
    TrainingInterrupted,
    latest_checkpoint,
    resolve_mixed_precision,
    run_training,
    scale_for_processes,
)
from express4d_hf.training.mdm import MDMBatches, MDMTrainConfig, mdm_loss_fn

SMALL = dict(num_layers=1, hidden_size=32, ff_size=64, num_heads=2, dropout=0.1, attention_dropout=0.0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this file runs its tiny models on one thread."""


@pytest.fixture(scope="module")
def train_set():
    from express4d_hf.data.hub import dataset_stats, load_express4d
    from express4d_hf.data.torch import MotionDataset

    splits = load_express4d(None, progress=False)
    return MotionDataset(splits["train"].select(range(48)), dataset_stats(None), train=True, seed=0)


def _mdm_run(train_set, out, steps, *, stop_at=None, resume=True, **loop):
    config = MDMTrainConfig.preset("tiny", max_steps=steps, batch_size=8, warmup_steps=10, checkpoint_every=0,
                                   checkpoint_minutes=0, log_every=50, model_overrides=SMALL, ema_decay=0.99, **loop)  # fmt: skip
    vocabulary = CaptionVocabulary(train_set.captions)
    torch.manual_seed(0)
    model = config.build_denoiser(8)
    table = torch.randn(len(vocabulary), 8, generator=torch.Generator().manual_seed(1))

    def stop(step, _model):
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # what `timeout` sends: checkpoint at the step boundary, then stop

    return run_training(model, None, None, mdm_loss_fn(config, table), config.loop_config(), out, name="mdm",
                        batches=MDMBatches(train_set, config, vocabulary), graph_safe=True, resume=resume,
                        progress=False, on_step=stop if stop_at else None, every=1)  # fmt: skip


def test_resume_is_exact(train_set, tmp_path):
    """200 steps straight == 100 steps, SIGTERM, resume to 200: identical weights, EMA and AdamW state."""
    _mdm_run(train_set, tmp_path / "straight", 200)
    with pytest.raises(TrainingInterrupted):
        _mdm_run(train_set, tmp_path / "resumed", 200, stop_at=100)
    assert latest_checkpoint(tmp_path / "resumed").name == "step_100"
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step_100" / "state.json").read_text())
    assert state["step"] == 100 and "numpy" in state["rng"] and state["extra"]["elapsed_s"] > 0
    assert set(load_file(tmp_path / "resumed" / "checkpoints" / "step_100" / "rng.safetensors")) >= {"torch_cpu", "numpy_keys"}
    result = _mdm_run(train_set, tmp_path / "resumed", 200)
    assert result.total_seconds > result.seconds  # the interrupted run's time is kept
    for name in ("model", "ema", "optimizer"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step_200" / f"{name}.safetensors")
        b = load_file(tmp_path / "resumed" / "checkpoints" / "step_200" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key}"
    assert not list((tmp_path / "resumed").rglob("*.bin")) and not list((tmp_path / "resumed").rglob("*.pt"))


def test_gradient_accumulation_keeps_the_recipe(tmp_path):
    """One batch of 8 == two micro-batches of 4 (same optimiser steps, same samples)."""
    config = LoopConfig(max_steps=2, batch_size=8, warmup_steps=1, checkpoint_every=0, checkpoint_minutes=0, ema_decay=0.0)
    results = []
    for parts in (1, 2):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 1)
        data = torch.randn(8, 5, generator=torch.Generator().manual_seed(2))

        class Source:
            def __init__(self, **kwargs):
                pass

            def batch(self, step):
                return {"x": data}

        loss = lambda m, b: {"loss": (m(b["x"]) ** 2).mean()}  # noqa: E731
        run_training(model, None, None, loss, LoopConfig(**{**config.__dict__, "gradient_accumulation_steps": parts}),
                     tmp_path / f"lin{parts}", batches=Source, resume=False, progress=False)  # fmt: skip
        results.append(model.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_mixed_precision_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setenv("ACCELERATE_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    default = "bf16" if torch.cuda.is_available() else "no"
    assert resolve_mixed_precision(None) == (default, "default")
    config_file = tmp_path / "accelerate.yaml"
    config_file.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: fp16\n")
    monkeypatch.setenv("ACCELERATE_CONFIG_FILE", str(config_file))
    assert resolve_mixed_precision(None) == ("fp16", "accelerate config")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` exports
    assert resolve_mixed_precision(None)[0] == "bf16"
    assert resolve_mixed_precision("no") == ("no", "explicit")
    with pytest.raises(ValueError):
        resolve_mixed_precision("fp8")


def test_recipe_is_kept_in_samples_under_several_processes():
    config = LoopConfig(max_steps=1001, batch_size=32, warmup_steps=100, checkpoint_every=500, learning_rate=1e-4,
                        ema_decay=0.999, lr_scaling="linear")  # fmt: skip
    scaled = scale_for_processes(config, 2)
    assert (scaled.max_steps, scaled.warmup_steps, scaled.checkpoint_every, scaled.batch_size) == (501, 50, 250, 32)
    assert scaled.learning_rate == pytest.approx(2e-4) and scaled.ema_decay == pytest.approx(0.999**2)
    assert scale_for_processes(config, 1) is config


def test_motion_batches_are_pure_functions_of_the_step_and_split_across_ranks(train_set):
    source = MotionBatches(train_set, 8, seed=3, window=16)
    a, b = source.batch(5), source.batch(5)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert a["motion"].shape == (8, 16, 61) and int(a["lengths"].max()) <= 16
    assert not torch.equal(source.batch(6)["motion"], a["motion"])
    assert torch.all(a["motion"][~a["mask"]] == 0)
    # two ranks draw disjoint halves of the same global batch
    ranks = [MotionBatches(train_set, 4, seed=3, rank=r, world=2) for r in (0, 1)]
    rows = [r.indices(2)[0] for r in ranks]
    assert not set(rows[0].tolist()) & set(rows[1].tolist())
    # mirrored samples carry the mirrored caption, and every caption index is one of the clip's (or its mirror)
    vocabulary = source.vocabulary
    full = MotionBatches(train_set, 48, seed=1)
    batch = full.batch(0)
    for i, caption_id in enumerate(batch["caption_ids"].tolist()):
        assert vocabulary.captions[caption_id] in {c for clip in train_set.captions for c in clip} | {
            vocabulary.captions[int(vocabulary.mirror_index[vocabulary.index[c]])] for clip in train_set.captions for c in clip}


def test_code_batches_follow_the_code_sequence_recipe():
    from express4d_hf.training.t2m_gpt import TokenizedSplit

    codes = torch.arange(20).reshape(2, 10) % 7
    tokens = TokenizedSplit(codes, codes.flip(1), torch.tensor([10, 4]), [["left smile"], ["frown"]])
    source = CodeBatches(tokens, pad_id=99, batch_size=2, mirror_prob=0.5, token_drop_prob=1.0, min_codes=3, seed=0)
    for step in range(6):
        batch = source.batch(step)
        for row, length in zip(batch["codes"], batch["lengths"].tolist()):
            assert length in (9, 3) and torch.all(row[length:] == 99) and torch.all(row[:length] < 7)


def test_compiled_training_step_on_cpu(train_set, tmp_path, monkeypatch):
    """`--compile` compiles the model at static shapes (it crashed at step 2 with dynamic shapes)."""
    monkeypatch.setenv("EXPRESS4D_COMPILE_BACKEND", os.environ.get("EXPRESS4D_TEST_COMPILE_BACKEND", "aot_eager"))
    torch._dynamo.reset()
    result = _mdm_run(train_set, tmp_path / "compiled", 3, compile=True)
    assert result.info["compile"] and np.isfinite(result.losses[-1]["loss"])
    torch._dynamo.reset()


def test_two_process_cpu_training_with_accelerate_launch(tmp_path):
    """`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ... train mdm`: half the steps,
    one checkpoint folder and one metadata file written by the main process."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           "-m", "express4d_hf.cli", "train", "mdm", "--preset", "tiny", "--max-steps", "6", "--batch-size", "4",
           "--out", str(out), "--sample-every", "0", "--model-overrides", "num_layers=1", "hidden_size=32"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metadata = json.loads((out / "training_metadata.json").read_text())
    assert metadata["execution"]["processes"] == 2 and metadata["steps"] == 3
    assert metadata["execution"]["mixed_precision_source"].startswith("accelerate")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_3"]


def test_every_config_field_is_an_option_and_presets_fill_defaults_first():
    from dataclasses import fields

    from express4d_hf.commands.train import configs_from_args, trainer_parser
    from express4d_hf.training.evaluator import EvaluatorTrainConfig
    from express4d_hf.training.t2m_gpt import GPTTrainConfig, VQVAETrainConfig

    mdm = trainer_parser("mdm")
    options = {a.dest for a in mdm._actions}
    assert {f.name for f in fields(MDMTrainConfig)} <= options
    assert {f.name for f in fields(EvaluatorTrainConfig)} <= {a.dest for a in trainer_parser("evaluator")._actions}
    gpt = {a.dest for a in trainer_parser("t2m-gpt")._actions}
    assert {f"vqvae__{f.name}" for f in fields(VQVAETrainConfig)} | {f"gpt__{f.name}" for f in fields(GPTTrainConfig)} <= gpt

    args = mdm.parse_args(["--preset", "paper", "--max-steps", "1000", "--ema-decay", "0.5", "--no-trim-padding",
                           "--model-overrides", "num_layers=2", "dropout=0.0", "--mixed-precision", "no"])  # fmt: skip
    config = configs_from_args(args, "mdm")[""]
    paper = MDMTrainConfig.preset("paper")
    assert config.max_steps == 1000 and config.warmup_steps == 100  # derived from the new step count
    assert config.checkpoint_every == 1000 and config.batch_size == paper.batch_size  # the preset's value
    assert config.ema_decay == 0.5 and config.trim_padding is False and config.mixed_precision == "no"
    assert config.model_overrides == {"num_layers": 2, "dropout": 0.0}

    args = trainer_parser("t2m-gpt").parse_args(["--max-steps", "40", "--vqvae-learning-rate", "0.5", "--gpt-max-steps", "30",
                                                 "--batch-size", "16", "--text-encoder", "x"])  # fmt: skip
    both = configs_from_args(args, "t2m-gpt")
    assert (both["vqvae"].max_steps, both["gpt"].max_steps) == (40, 30)
    assert both["vqvae"].learning_rate == 0.5 and both["gpt"].learning_rate == GPTTrainConfig.preset("tiny").learning_rate
    assert both["vqvae"].batch_size == both["gpt"].batch_size == 16 and both["gpt"].text_encoder == "x"


def test_bench_training_smoke_on_cpu(tmp_path):
    """`bench/bench_training.py --device cpu --smoke` (every stage, eager and fast loop) finishes and reports."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_training.py"
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["stages"]) == {"movement", "contrastive", "mdm", "vqvae", "gpt"}
    for row in results["stages"].values():
        assert row["eager"]["ms_per_step"] > 0 and row["fast"]["ms_per_step"] > 0 and row["full_schedule_min"] > 0


def test_bench_training_times_stages_together_in_one_window(tmp_path):
    """`--together` runs the stages at once, one process each, after a common start line, and reports each
    stage's step time beside its time alone and the overlap (1 = taking turns, N = perfect)."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_training.py"
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--smoke", "--stages", "movement,vqvae", "--variants",
                           "eager", "--together", "eager", "--json", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    together = json.loads(out.read_text())["together"]
    assert set(together["stages"]) == {"movement", "vqvae"} and not together["mps"]
    for row in together["stages"].values():
        assert row["alone_ms"] > 0 and row["together_ms"] > 0 and row["slowdown"] > 0
    assert 0 < together["overlap"] <= 2 * 1.5  # two stages; noise on a shared CPU aside
    bad = subprocess.run([sys.executable, str(script), "--device", "cpu", "--smoke", "--variants", "eager", "--together", "fast"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "add it to --variants" in bad.stderr


def test_evaluator_gru_without_packing_matches_the_packed_one():
    """The padded form (static shapes, for CUDA graphs) equals pack_padded_sequence within 1e-5."""
    from express4d_hf.models.evaluator import BiGRUEncoder

    torch.manual_seed(0)
    encoder = BiGRUEncoder(7, 16, 8)
    x = torch.randn(6, 13, 7)
    lengths = torch.tensor([13, 1, 5, 9, 2, 13])
    packed, padded = encoder(x, lengths, packed=True), encoder(x, lengths, packed=False)
    torch.testing.assert_close(padded, packed, rtol=0, atol=1e-5)
    x[2, 5:] = 99.0  # padding never reaches a row's embedding
    torch.testing.assert_close(encoder(x, lengths, packed=False)[2], padded[2], rtol=0, atol=1e-6)


def test_benchmark_timing_ledger_adds_up_invocations(tmp_path):
    from express4d_hf.apps.benchmark import TimingLedger

    first = TimingLedger(tmp_path)
    first.stage("mdm", 100.0, 160.0)
    first.stage("evaluator", 110.0, 130.0)  # overlapping stages: the training wall is 60 s, not 80
    first.close("interrupted")
    second = TimingLedger(tmp_path)
    second.stage("mdm", 500.0, 510.0)
    totals = second.totals()
    assert totals["train_mdm_s"] == 70.0 and totals["train_evaluator_s"] == 20.0
    assert totals["train_wall_s"] == 70.0 and totals["invocations"] == 2
    second.close("finished")
    saved = json.loads((tmp_path / "timings.json").read_text())["invocations"]
    assert [i["status"] for i in saved] == ["interrupted", "finished"] and saved[0]["train_wall_s"] == 60.0


def test_benchmark_timing_ledger_counts_a_killed_invocation_and_its_phases(tmp_path):
    """The ledger is on disk at every boundary: an invocation killed outright (never closed) still counts up to
    its last boundary, marked "killed" by the next one. Phases add up to the invocation's wall time."""
    from express4d_hf.apps.benchmark import TimingLedger

    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    killed = TimingLedger(tmp_path, clock=clock)
    killed.phase("data")
    now[0] += 5
    killed.phase("train_phase")
    now[0] += 45
    killed.stage("evaluator", 1005.0, 1050.0)  # saved at the stage's end
    now[0] += 5  # ... then SIGKILL: no close(); these 5 s are lost
    second = TimingLedger(tmp_path, clock=clock)
    assert second.invocations[0]["status"] == "killed"
    second.phase("data")
    now[0] += 2
    second.phase("train_phase")
    now[0] += 30
    second.stage("mdm", 1057.0, 1087.0)
    second.phase("evaluate")
    now[0] += 10
    totals = second.totals()
    assert totals["train_evaluator_s"] == 45.0 and totals["train_mdm_s"] == 30.0
    assert totals["train_wall_s"] == 75.0 and totals["data_s"] == 7.0 and totals["evaluate_s"] == 10.0
    assert totals["total_s"] == 50.0 + 42.0 and totals["invocations"] == 2  # the killed one up to its last boundary
    assert totals["train_phase_s"] == 45.0 + 30.0
    second.close("finished")
    saved = json.loads((tmp_path / "timings.json").read_text())["invocations"]
    assert [i["status"] for i in saved] == ["killed", "finished"]
    assert saved[1]["phases"] == {"data": 2.0, "train_phase": 30.0, "evaluate": 10.0} and saved[1]["total_s"] == 42.0


def test_a_diverged_training_stops_with_a_clear_error_and_keeps_its_last_good_checkpoint(train_set, tmp_path):
    """A NaN loss stops the run at the next log line (no NaN checkpoints written after it), naming the steps."""
    from express4d_hf.training.common import TrainingDiverged

    config = MDMTrainConfig.preset("tiny", max_steps=40, batch_size=8, warmup_steps=2, checkpoint_every=10,
                                   checkpoint_minutes=0, log_every=10, model_overrides=SMALL, ema_decay=0.0)  # fmt: skip
    vocabulary = CaptionVocabulary(train_set.captions)
    torch.manual_seed(0)
    model = config.build_denoiser(8)
    loss = mdm_loss_fn(config, torch.randn(len(vocabulary), 8, generator=torch.Generator().manual_seed(1)))
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        out = loss(model, batch)
        return {**out, "loss": out["loss"] * float("nan")} if calls["n"] > 15 else out

    with pytest.raises(TrainingDiverged, match=r"loss = nan over steps 11-20.*last checkpoint .*step_10"):
        run_training(model, None, None, poisoned, config.loop_config(), tmp_path, name="mdm", resume=False,
                     batches=MDMBatches(train_set, config, vocabulary), graph_safe=True, progress=False)  # fmt: skip
    assert latest_checkpoint(tmp_path).name == "step_10"
