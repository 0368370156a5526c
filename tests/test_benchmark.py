"""A reduced `express4d benchmark` end to end: structure of results.json / results.md, resume, errors.

Structure only: the quality gates are checked by the real tiny-preset run whose numbers are in the README.
"""

from __future__ import annotations

import json

import pytest

from express4d_hf.cli import main
from express4d_hf.data.hub import build_dataset
from express4d_hf.data.synthetic import synthesize_release

METRICS = {"r_precision_top1", "r_precision_top2", "r_precision_top3", "fid", "mm_dist", "diversity"}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_data")
    release = synthesize_release(root / "release", num_clips=180, participants=6, seed=3, progress=False)
    return build_dataset(release, root / "built", progress=False)


def run(dataset, out, *extra):
    return main([
        "benchmark", "--data", str(dataset), "--out", str(out), "--replications", "2", "--max-test-clips", "32",
        "--steps", "2", "--max-steps", "evaluator=2", "--max-steps", "mdm=2", "--max-steps", "vqvae=2",
        "--max-steps", "gpt=2", *extra,
    ])  # fmt: skip


def test_reduced_benchmark_writes_every_report_and_resumes(small_dataset, tmp_path, capsys):
    out = tmp_path / "bench"
    assert run(small_dataset, out) == 0
    report = json.loads((out / "results.json").read_text())
    models = [row["model"] for row in report["rows"]]
    assert models == ["real", "text_blind", "noise", "mdm_fast", "t2m_gpt"]
    for row in report["rows"]:
        assert METRICS <= set(row["metrics"]), row["model"]
        for entry in row["metrics"].values():
            assert set(entry) >= {"mean", "ci95", "values"} and len(entry["values"]) == 2
        assert len(row["seeds"]) == 2
    assert report["rows"][0]["aits_s"] is None and report["rows"][3]["aits_s"] > 0
    meta = report["meta"]
    assert meta["data"]["test_clips_used"] == 32 and len(meta["data"]["fingerprint"]) == 64
    assert {"torch", "diffusers", "express4d_hf"} <= set(meta["versions"]) and meta["hardware"]
    table = (out / "results.md").read_text()
    for title in ("Real (test clips)", "Text-blind control", "Noise reference", "MDM (fast sampler)", "T2M-GPT"):
        assert f"| {title} |" in table
    assert "± " in table and "2 replications" in table
    assert (out / "metrics.png").stat().st_size > 10_000
    samples = sorted(p.name for p in (out / "samples" / "mdm_fast").iterdir())
    assert "sample_0.csv" in samples and "sample_0.png" in samples
    for folder in ("evaluator", "mdm", "t2m_gpt"):
        assert json.loads((out / folder / "stage.json").read_text())["stage"] == folder

    # A re-run with the same settings skips every stage and row and reproduces the numbers.
    before = {p: p.stat().st_mtime_ns for p in (out / "mdm").glob("**/*.safetensors")}
    capsys.readouterr()
    assert run(small_dataset, out) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "mdm").glob("**/*.safetensors")} == before
    again = json.loads((out / "results.json").read_text())
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in report["rows"]]


def test_benchmark_rejects_bad_arguments(small_dataset, tmp_path, capsys):
    assert main(["benchmark", "--data", str(small_dataset), "--out", str(tmp_path), "--models", "gan"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["benchmark", "--out", str(tmp_path), "--max-steps", "mdm"]) == 2
    assert "STAGE=N" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(small_dataset), "--out", str(tmp_path), "--sampler", "dpmsolver++", "--eta", "0.5"]) == 2
    assert "applies to the ddim sampler" in capsys.readouterr().err
