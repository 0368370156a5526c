"""Checkpoint selection on the validation split (issue #14): the criterion, and a reduced benchmark that keeps two
checkpoints of MDM, scores them on validation clips only and scores the test rows with the chosen one."""

from __future__ import annotations

import json

import pytest
import torch

from express4d_hf.apps.benchmark import BenchmarkConfig, run_benchmark
from express4d_hf.data.hub import build_dataset, load_express4d
from express4d_hf.data.splits import split_validation
from express4d_hf.evaluation.protocol import EvaluationResult
from express4d_hf.data.synthetic import synthesize_release
from express4d_hf.evaluation.selection import choose_checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """290 synthetic clips: 232 train, whose 15% validation split holds one group of 32 (35 clips)."""
    root = tmp_path_factory.mktemp("selection_data")
    release = synthesize_release(root / "release", num_clips=290, participants=6, seed=3, progress=False)
    return build_dataset(release, root / "built", progress=False)


def _result(r3: list[float], fid: list[float]) -> EvaluationResult:
    return EvaluationResult({"r_precision_top3": r3, "fid": fid}, list(range(len(r3))))


def test_choose_checkpoint_breaks_near_ties_by_fid_and_flags_falling_validation():
    scores = {1000: _result([0.60, 0.62], [4.0, 4.2]), 2000: _result([0.70, 0.74], [6.0, 6.0]),
              3000: _result([0.71, 0.71], [5.0, 5.0]), 4000: _result([0.50, 0.52], [3.0, 3.0])}  # fmt: skip
    choice = choose_checkpoint(scores)
    assert choice["best_step"] == 2000 and choice["tied_steps"] == [2000, 3000]
    assert choice["selected_step"] == 3000  # within the best's R@3 interval and a lower FID
    assert choice["overfit"] and choice["last_step"] == 4000  # the last step fell below the best's interval
    assert not choose_checkpoint({k: v for k, v in scores.items() if k < 4000})["overfit"]
    exact = choose_checkpoint({1: _result([0.5, 0.5], [2, 2]), 2: _result([0.5, 0.5], [2, 2])})
    assert exact["selected_step"] == 2  # a full tie keeps the later step


def test_benchmark_selects_checkpoints_on_validation_clips_only(dataset, tmp_path):
    out = tmp_path / "bench"
    config = BenchmarkConfig.preset_config(
        "tiny", models=("mdm",), replications=1, fast_steps=2, max_test_clips=32, num_samples=1,
        max_steps={"evaluator": 2, "mdm": 4}, select_checkpoints=True, selection_points=2, selection_replications=2,
        selection_max_clips=32,
    )  # fmt: skip
    report = run_benchmark(dataset, out, config, progress=False)

    record = report["meta"]["checkpoint_selection"]["mdm_fast"]
    assert record["steps"] == [2, 4] and [p["step"] for p in record["curve"]] == [2, 4]
    assert record["selected_step"] in (2, 4) and record["replications"] == 2 and isinstance(record["overfit"], bool)
    for step in (2, 4):  # each step's validation result is kept (a resumed run does not score it again)
        cached = json.loads((out / "mdm" / "validation" / f"step_{step}.json").read_text())
        assert cached["step"] == step and EvaluationResult.from_dict(cached["result"]).replications == 2

    # The clips selection scored are the validation split's, held out of MDM's training; never a test clip.
    splits = load_express4d(dataset, progress=False)
    train_idx, val_idx = split_validation(len(splits["train"]), 0.15, seed=0)
    val_ids, test_ids = set(splits["train"].select(val_idx)["id"]), set(splits["test"]["id"])
    used = set(record["validation"]["clip_ids"])
    assert len(used) == 32 and used <= val_ids and not used & test_ids
    mdm_meta = json.loads((out / "mdm" / "training_metadata.json").read_text())
    assert mdm_meta["config"]["validation_holdout"] == 0.15 and mdm_meta["train_clips"] <= len(train_idx)
    test_row = next(r for r in report["rows"] if r["model"] == "mdm_fast")
    assert test_row["info"]["num_clips"] == 32 and test_row["selected_step"] == record["selected_step"]

    # The last kept weights are the trainer's final EMA weights; the folder holds the selected step's weights
    # ("keep the best"; selection.json says which); validation.png and the notes exist.
    from safetensors.torch import load_file

    from express4d_hf.evaluation.selection import keep_selected
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline

    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    kept = {s: load_file(out / "mdm" / "weights" / f"step_{s}.safetensors") for s in (2, 4)}
    assert same(kept[4], load_file(out / "mdm" / "checkpoints" / "step_4" / "ema.safetensors"))
    assert not same(kept[2], kept[4])
    held = load_file(out / "mdm" / "denoiser" / "diffusion_pytorch_model.safetensors")
    assert same(held, kept[record["selected_step"]])
    assert json.loads((out / "mdm" / "selection.json").read_text())["selected_step"] == record["selected_step"]
    assert (out / "validation.png").stat().st_size > 5_000
    assert f"step {record['selected_step']} of [2, 4]" in (out / "results.md").read_text()

    for step in (2, 4):  # either choice lands in the folder and loads
        keep_selected(out / "mdm", {**record, "selected_step": step})
        loaded = Express4DMDMPipeline.from_pretrained(out / "mdm").denoiser.state_dict()
        assert same({k: loaded[k] for k in kept[step]}, kept[step])
