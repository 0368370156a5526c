"""`bench/quality_fast_loop.py` (issue #14's eager-vs-fast quality check): its plan, time cap and verdict. The
GPU run is the lead's; `--smoke` of MDM (the whole pipeline on a CPU, ~1.5 min) is run by hand, not in CI; the tokenizer's is quick and runs here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "quality_fast_loop.py"


def load():
    spec = importlib.util.spec_from_file_location("quality_fast_loop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_gpu_plan_is_capped_to_the_budget_and_says_so(capsys):
    q = load()
    assert q.main(["--preset", "paper", "--estimate-only"]) == 0
    out = capsys.readouterr().out
    assert "7 at once" in out and "not the shortened schedule's 15000" in out
    kwargs = dict(evaluator_steps=10_000, seeds=3, concurrent=7, train_evaluator=True, replications=3)
    steps = q.capped_steps(15_000, 12 * 60, **kwargs)
    assert 500 <= steps < 15_000 and steps % 500 == 0 and q.estimate_s(steps, **kwargs) <= 12 * 60
    assert q.estimate_s(15_000, **kwargs, gpus=8) < q.estimate_s(15_000, **kwargs)  # one job per GPU
    assert q.main(["--preset", "paper", "--estimate-only", "--steps", "15000"]) == 0  # an explicit --steps is kept
    assert "MDM paper, 15000 steps" in capsys.readouterr().out


def test_verdict_is_the_fast_mean_inside_the_eager_range():
    q = load()

    def scores(r3, fid):
        return {"metrics": {"r_precision_top3": {"mean": r3}, "fid": {"mean": fid}}}

    table = {"mdm_eager_seed0": scores(0.50, 4.0), "mdm_eager_seed1": scores(0.56, 3.0), "mdm_eager_seed2": scores(0.53, 5.0),
             "mdm_fast_seed0": scores(0.52, 3.5), "mdm_fast_seed1": scores(0.55, 4.5), "mdm_fast_seed2": scores(0.51, 4.0)}  # fmt: skip
    summary = q.summarize(table, [0, 1, 2])
    assert summary["r_precision_top3"]["eager_range"] == [0.50, 0.56] and summary["verdict"] == "pass"
    table["mdm_fast_seed0"] = scores(0.20, 3.5)
    assert q.summarize(table, [0, 1, 2])["verdict"] == "fail"


def test_tokenizer_check_runs_end_to_end_on_a_cpu(tmp_path, capsys):
    """`--model vqvae`: eager and fast VQ-VAE trainings scored by their test reconstruction, with report and plot
    (the smoke corpus and 30 steps: plumbing, not a quality figure)."""
    q = load()
    out = tmp_path / "out"
    assert q.main(["--model", "vqvae", "--smoke", "--seeds", "0,1", "--out", str(out)]) == 0
    report = json.loads((out / "quality_fast_loop.json").read_text())
    assert report["model"] == "vqvae" and set(report["models"]) == {f"vqvae_{loop}_seed{k}" for loop in ("eager", "fast") for k in (0, 1)}
    entry = report["models"]["vqvae_fast_seed1"]
    assert 0 < entry["metrics"]["reconstruction_mse"]["mean"] < 10 and entry["mean_predictor_mse"] > 0
    assert entry["execution"]["steps"] == 30 and report["evaluator_steps"] is None
    table = (out / "quality_fast_loop.md").read_text()
    assert "VQ-VAE (T2M-GPT's tokenizer)" in table and "reconstruction MSE ↓" in table and "Verdict:" in table
    assert (out / "quality_fast_loop.png").stat().st_size > 1000


def test_tokenizer_verdict_compares_reconstruction_errors():
    q = load()

    def scores(mse):
        return {"metrics": {"reconstruction_mse": {"mean": mse}, "reconstruction_l1": {"mean": mse / 2}}}

    table = {f"vqvae_eager_seed{k}": scores(v) for k, v in enumerate((0.34, 0.36, 0.35))}
    table.update({f"vqvae_fast_seed{k}": scores(v) for k, v in enumerate((0.35, 0.34, 0.36))})
    assert q.summarize(table, [0, 1, 2], "vqvae")["verdict"] == "pass"
    table.update({f"vqvae_fast_seed{k}": scores(v) for k, v in enumerate((0.33, 0.33, 0.335))})  # slightly better: no regression
    better = q.summarize(table, [0, 1, 2], "vqvae")
    assert better["verdict"] == "pass" and not better["reconstruction_mse"]["inside"] and better["reconstruction_mse"]["no_worse"]
    table.update({f"vqvae_fast_seed{k}": scores(1.04) for k in range(3)})  # the compiled tokenizer that learnt nothing
    summary = q.summarize(table, [0, 1, 2], "vqvae")
    assert summary["verdict"] == "fail" and not summary["reconstruction_mse"]["inside"]
