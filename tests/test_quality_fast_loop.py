"""`bench/quality_fast_loop.py` (issue #14's eager-vs-fast quality check): its plan, time cap and verdict. The
GPU run is the lead's; `--smoke` (the whole pipeline on a CPU, ~1.5 min) is run by hand, not in CI."""

from __future__ import annotations

import importlib.util
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
