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


@pytest.fixture(scope="module")
def bench_out(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench"
    assert run(small_dataset, out) == 0
    return out


def test_reduced_benchmark_writes_every_report_and_resumes(small_dataset, bench_out, capsys):
    out = bench_out
    report = json.loads((out / "results.json").read_text())
    models = [row["model"] for row in report["rows"]]
    assert models == ["real", "text_blind", "noise", "mdm_fast", "mdm_order_fast", "t2m_gpt", "t2m_gpt_order"]
    for row in report["rows"]:
        assert METRICS <= set(row["metrics"]), row["model"]
        for entry in row["metrics"].values():
            assert set(entry) >= {"mean", "ci95", "values"} and len(entry["values"]) == 2
        assert len(row["seeds"]) == 2
    assert report["rows"][0]["aits_s"] is None and report["rows"][3]["aits_s"] > 0
    meta = report["meta"]
    assert meta["data"]["test_clips_used"] == 32 and len(meta["data"]["fingerprint"]) == 64
    assert meta["protocol"]["evaluator"].startswith("sha256:")  # every score names its evaluator
    assert all(row["info"]["evaluator"] == meta["protocol"]["evaluator"] for row in report["rows"])
    assert {"torch", "diffusers", "express4d_hf"} <= set(meta["versions"]) and meta["hardware"]
    table = (out / "results.md").read_text()
    for title in ("Real (test clips)", "Text-blind control", "Noise reference", "MDM (fast sampler)", "T2M-GPT",
                  "MDM order-aware (fast sampler)", "T2M-GPT order-aware"):
        assert f"| {title} |" in table
    assert "Order acc. ↑" in table
    for row in report["rows"]:  # every row with a generator has an order accuracy with its interval
        acc = row["order_accuracy"]
        assert 0 <= acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"] <= 1 and len(acc["probes"]) == 28
    assert report["rows"][0]["order_accuracy"]["accuracy"] == 1.0  # the synthesiser plays the steps in order
    assert "± " in table and "2 replications" in table
    assert (out / "metrics.png").stat().st_size > 10_000
    samples = sorted(p.name for p in (out / "samples" / "mdm_fast").iterdir())
    assert "sample_0.csv" in samples and "sample_0.png" in samples
    for folder in ("evaluator", "mdm", "t2m_gpt", "mdm_order", "t2m_gpt_order"):
        assert json.loads((out / folder / "stage.json").read_text())["stage"] == folder
    assert json.loads((out / "t2m_gpt_order" / "model_index.json").read_text())
    assert json.loads((out / "t2m_gpt_order" / "transformer" / "config.json").read_text())["text_conditioning"] == "tokens"

    # A re-run with the same settings skips every stage and row and reproduces the numbers.
    before = {p: p.stat().st_mtime_ns for p in (out / "mdm").glob("**/*.safetensors")}
    capsys.readouterr()
    assert run(small_dataset, out) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "mdm").glob("**/*.safetensors")} == before
    again = json.loads((out / "results.json").read_text())
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in report["rows"]]
    assert again["meta"]["evaluator"]["class"] == "TextMotionEvaluator"


def test_interrupted_then_resumed_benchmark_adds_up_its_timings(small_dataset, tmp_path, monkeypatch):
    """results.json's timings cover every invocation of the folder: a first one stopped during MDM's training
    (after the evaluator trained) and a second one that resumes it; each stage counts only where it trained."""
    import time

    import express4d_hf.training.mdm as mdm_training
    from express4d_hf.apps.benchmark import BenchmarkInterrupted

    out = tmp_path / "bench"
    real_train = mdm_training.train_mdm

    def stopped(*args, **kwargs):
        time.sleep(1.0)  # trains a while, then SIGTERM arrives
        raise BenchmarkInterrupted("SIGTERM: stopped; re-run the same command to resume")

    monkeypatch.setattr(mdm_training, "train_mdm", stopped)
    assert run(small_dataset, out, "--models", "mdm") != 0  # the CLI reports the interruption
    first = json.loads((out / "timings.json").read_text())["invocations"]
    assert [i["status"] for i in first] == ["interrupted"] and not (out / "results.json").exists()
    assert set(first[0]["stages"]) == {"evaluator", "mdm"} and first[0]["stages"]["mdm"] >= 1.0
    assert first[0]["phases"]["data"] > 0 and first[0]["phases"]["train_phase"] > 0

    monkeypatch.setattr(mdm_training, "train_mdm", real_train)
    assert run(small_dataset, out, "--models", "mdm") == 0
    timings = json.loads((out / "results.json").read_text())["meta"]["timings"]
    both = json.loads((out / "timings.json").read_text())["invocations"]
    assert [i["status"] for i in both] == ["interrupted", "finished"]
    assert set(both[1]["stages"]) == {"mdm"}  # the evaluator was up to date: skipped, not counted again
    close = lambda a, b: abs(a - b) <= 0.15  # noqa: E731 - results.json rounds to 0.1 s
    assert close(timings["train_evaluator_s"], first[0]["stages"]["evaluator"])
    assert close(timings["train_mdm_s"], first[0]["stages"]["mdm"] + both[1]["stages"]["mdm"])
    assert close(timings["train_wall_s"], first[0]["train_wall_s"] + both[1]["train_wall_s"])
    assert timings["train_wall_s"] >= max(timings["train_evaluator_s"], timings["train_mdm_s"]) - 0.2
    assert timings["total_s"] >= first[0]["total_s"] + timings["this_invocation_s"] - 0.2  # not the last one's only
    assert timings["total_s"] >= timings["data_s"] + timings["train_wall_s"] + timings["evaluate_s"] - 0.5
    assert timings["evaluate_s"] > 0 and timings["invocations"] == 2
    assert [i["status"] for i in timings["ledger"]] == ["interrupted", "running"]  # written while the 2nd ran
    assert timings["ledger"][0]["stages"] == first[0]["stages"]


def test_benchmark_scores_with_a_converted_official_evaluator(small_dataset, bench_out, tmp_path):
    """--evaluator DIR: the rows are scored by another evaluator (here a converted official-layout one) and the
    results say which; the trained stages are reused."""
    import pickle
    import shutil

    import numpy as np

    from express4d_hf.convert.evaluator import convert_official_evaluator
    from official_reference import save_official_evaluator

    out = tmp_path / "bench"
    shutil.copytree(bench_out, out)
    save_official_evaluator(tmp_path / "finest.tar", word_dim=300)
    glove = tmp_path / "glove"
    glove.mkdir()
    words = ["unk", "sos", "eos", "a", "person", "is", "smile", "eye", "left"]
    np.save(glove / "our_vab_data.npy", np.random.default_rng(0).normal(size=(len(words), 300)).astype(np.float32))
    (glove / "our_vab_words.pkl").write_bytes(pickle.dumps(words))
    (glove / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))
    official = convert_official_evaluator(tmp_path / "finest.tar", tmp_path / "official_ev", data=small_dataset,
                                          glove_dir=glove)  # fmt: skip
    assert run(small_dataset, out, "--evaluator", str(official), "--models", "mdm") == 0
    scored = json.loads((out / "results.json").read_text())
    assert scored["meta"]["evaluator"]["class"] == "OfficialTextMotionEvaluator"
    assert "finest.tar sha256" in scored["meta"]["evaluator"]["description"]
    assert "OfficialTextMotionEvaluator" in (out / "results.md").read_text()
    assert [row["model"] for row in scored["rows"]] == ["real", "text_blind", "noise", "mdm_fast"]


def test_benchmark_rejects_bad_arguments(small_dataset, tmp_path, capsys):
    assert main(["benchmark", "--data", str(small_dataset), "--out", str(tmp_path), "--models", "gan"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["benchmark", "--out", str(tmp_path), "--max-steps", "mdm"]) == 2
    assert "STAGE=N" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(small_dataset), "--out", str(tmp_path), "--sampler", "dpmsolver++", "--eta", "0.5"]) == 2
    assert "applies to the ddim sampler" in capsys.readouterr().err


def rows_of(folder):
    return {row["model"]: row for row in json.loads((folder / "results.json").read_text())["rows"]}


def test_evaluate_reproduces_the_benchmark_rows_exactly(small_dataset, bench_out, tmp_path, capsys):
    bench = rows_of(bench_out)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(bench_out / "mdm"), "--evaluator", str(bench_out / "evaluator"),
                 "--data", str(small_dataset), "--out", str(out), "--replications", "2", "--max-test-clips", "32",
                 "--sampler", "ddim", "--steps", "2", "--guidance-scale", "2.5"]) == 0  # fmt: skip
    rows = rows_of(out)
    assert list(rows) == ["real", "text_blind", "model"]
    for mine, theirs in (("real", "real"), ("text_blind", "text_blind"), ("model", "mdm_fast")):
        assert rows[mine]["metrics"] == bench[theirs]["metrics"], mine
    assert rows["model"]["info"]["evaluator"] == bench["mdm_fast"]["info"]["evaluator"]
    assert (out / "metrics.png").stat().st_size > 10_000 and "| Real (test clips) |" in (out / "results.md").read_text()
    assert "MDM (mdm)" in capsys.readouterr().out


def test_evaluate_scores_a_folder_of_csvs_like_the_real_row(small_dataset, bench_out, tmp_path):
    from express4d_hf.data.hub import load_express4d
    from express4d_hf.data.splits import clips_from_split
    from express4d_hf.livelink import write_livelink_csv

    folder = tmp_path / "takes"
    folder.mkdir()
    clips = clips_from_split(load_express4d(small_dataset, progress=False)["test"])[:32]
    for i, clip in enumerate(clips):
        write_livelink_csv(clip, folder / f"take_{i:03d}.csv", fps=None)
    (folder / "manifest.json").write_text(json.dumps([{"file": f"take_{i:03d}.csv", "caption": c.caption}
                                                      for i, c in enumerate(clips)]))  # fmt: skip
    out = tmp_path / "eval"
    assert main(["evaluate", "--motions", str(folder), "--evaluator", str(bench_out / "evaluator"), "--data",
                 str(small_dataset), "--out", str(out), "--replications", "2", "--max-test-clips", "32"]) == 0  # fmt: skip
    rows = rows_of(out)
    for metric in ("r_precision_top1", "r_precision_top2", "r_precision_top3", "mm_dist", "diversity"):
        assert rows["motions"]["metrics"][metric]["values"] == pytest.approx(rows["real"]["metrics"][metric]["values"], rel=1e-4), metric
    assert rows["motions"]["metrics"]["fid"]["mean"] < 1e-3 < rows["text_blind"]["metrics"]["fid"]["mean"]


def test_evaluate_names_bad_manifest_entries(bench_out, tmp_path, capsys):
    folder = tmp_path / "takes"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps([{"file": "missing.csv", "caption": "A person smiles"},
                                                      {"file": "x.csv"}]))  # fmt: skip
    assert main(["evaluate", "--motions", str(folder), "--evaluator", str(bench_out / "evaluator"), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "2 unusable entries" in err and "missing.csv" in err and "entry 1" in err
    with pytest.raises(SystemExit) as exit_info:  # bad numbers fail at parse time, before any loading
        main(["evaluate", "--model", "x", "--evaluator", "y", "--replications", "0"])
    assert exit_info.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_a_tokenizer_that_learnt_nothing_is_flagged_under_the_table(tmp_path):
    """A T2M-GPT row whose VQ-VAE reconstructs no better than the mean is marked as not a result (the compiled
    paper-preset tokenizer once did: test MSE 1.03 against the mean's ~1.0, and its rows scored FID ~243)."""
    from express4d_hf.apps.benchmark import _tokenizer_notes
    from express4d_hf.training.t2m_gpt import tokenizer_failure

    assert "MSE 1.030 vs 1.000" in tokenizer_failure({"mse": 1.03, "mean_mse": 1.0})
    assert tokenizer_failure({"mse": 0.34, "mean_mse": 1.0}) is None
    assert tokenizer_failure(None) is None and tokenizer_failure({"mse": 0.9}) is None  # older metadata: no baseline, no claim
    for name, mse in (("t2m_gpt", 1.03), ("t2m_gpt_order", 0.3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "training_metadata.json").write_text(json.dumps({"reconstruction_test": {"mse": mse, "mean_mse": 1.0}}))
    notes = _tokenizer_notes(tmp_path)
    assert "T2M-GPT: not a result" in notes and "MSE 1.030 vs 1.000" in notes and "order-aware" not in notes
    assert _tokenizer_notes(tmp_path / "missing") == ""


def test_the_note_under_the_table_names_the_tokenizer_step_that_was_kept(tmp_path):
    from express4d_hf.apps.benchmark import _tokenizer_notes
    from express4d_hf.training.t2m_gpt import VQVAE_STAGE_DIR

    selection = {"split": "validation", "clips": 145, "selected_step": 5000, "last_step": 10000, "worsened": True,
                 "mse_by_step": {"5000": 0.2012, "10000": 1.7043}}  # fmt: skip
    (tmp_path / "t2m_gpt" / VQVAE_STAGE_DIR).mkdir(parents=True)
    (tmp_path / "t2m_gpt" / VQVAE_STAGE_DIR / "training_metadata.json").write_text(json.dumps({"selection": selection}))
    notes = _tokenizer_notes(tmp_path)
    assert "T2M-GPT tokenizer: step 5000 of the 2 kept" in notes and "145 validation clips (0.2012" in notes
    assert "10000: 1.7043, worse: the training was unstable" in notes and "order-aware" not in notes


def test_the_order_aware_mdm_gets_the_1000_step_row_only_on_request():
    from express4d_hf.apps.benchmark import BenchmarkConfig, scores_full_ddpm

    paper = BenchmarkConfig.preset_config("paper")
    assert scores_full_ddpm(paper, "mdm") and not scores_full_ddpm(paper, "mdm-order")
    assert scores_full_ddpm(BenchmarkConfig.preset_config("paper", full_ddpm_order=True), "mdm-order")
    assert not scores_full_ddpm(BenchmarkConfig.preset_config("tiny", full_ddpm_order=True), "mdm-order")  # no DDPM rows at all


def test_a_resumed_benchmark_retrains_a_t2m_gpt_stage_whose_tokenizer_learnt_nothing(tmp_path):
    """Resuming keeps finished stages, but not a T2M-GPT stage whose tokenizer failed: it is moved aside (kept)
    and trained again; a sound one is skipped."""
    from express4d_hf.apps.benchmark import _mark_done, _run_stage, _stage_key

    def finished(name, mse):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "training_metadata.json").write_text(json.dumps({"reconstruction_test": {"mse": mse, "mean_mse": 1.0}}))
        _mark_done(folder, name, _stage_key(name, {"x": 1}, "data"), {"x": 1}, 1.0)
        return folder

    calls = []
    for name, mse in (("t2m_gpt", 1.03), ("t2m_gpt_order", 0.3)):
        folder = finished(name, mse)
        _run_stage(name, folder, {"x": 1}, "data", lambda folder=folder: (calls.append(folder.name), folder.mkdir()), resume=True)
    assert calls == ["t2m_gpt"]  # only the unsound one trained again
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith("t2m_gpt.unsound-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "training_metadata.json").exists()
    assert json.loads((tmp_path / "t2m_gpt" / "stage.json").read_text())["stage"] == "t2m_gpt"


def test_the_order_aware_mdm_trains_with_the_others_under_its_former_stage_key(tmp_path):
    """It joins the first wave of trainings (it depends on none); its stage key is the one finished folders
    were marked with before (its config plus the denoiser preset), so a resumed run does not retrain it."""
    from dataclasses import asdict

    from express4d_hf.apps.benchmark import BenchmarkConfig, _stage_jobs, _stage_key_config
    from express4d_hf.models.mdm import MDM_PRESETS

    config = BenchmarkConfig.preset_config("tiny")
    jobs = _stage_jobs(config, tmp_path, tmp_path / "e", tmp_path / "m", tmp_path / "t", tmp_path / "mo")
    assert [name for name, _, _ in jobs] == ["evaluator", "mdm", "t2m_gpt", "mdm_order"]
    name, folder, configs = jobs[-1]
    assert folder == tmp_path / "mo" and configs["mdm"].model_preset == "tiny_order"
    assert _stage_key_config(name, configs) == {**asdict(configs["mdm"]), "denoiser": dict(MDM_PRESETS["tiny_order"])}
    config.models = ("mdm", "t2m-gpt")
    assert [n for n, _, _ in _stage_jobs(config, tmp_path, tmp_path, tmp_path, tmp_path, tmp_path)] == ["evaluator", "mdm", "t2m_gpt"]


def _fake_mps_control(folder, log):
    """A recorder in place of NVIDIA's daemon binary: logs its arguments, stdin and pipe folder."""
    script = folder / "nvidia-cuda-mps-control"
    script.write_text(f'#!/bin/sh\necho "args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY stdin=$(cat)" >> {log}\n')
    script.chmod(0o755)


def test_concurrent_trainings_join_a_private_mps_daemon_or_run_without_it(tmp_path, monkeypatch, capsys):
    from express4d_hf.apps.benchmark import TimingLedger, _train_stages_concurrently
    from express4d_hf.training.gpu_sharing import MPSDaemon, mps_client_env, mps_unavailable_reason, worker_env

    with mps_client_env(False) as (env, error):
        assert env == {} and error is None
    shared = {"CUDA_MPS_PIPE_DIRECTORY": "/p"}
    assert worker_env(shared, 3, 1) == shared  # one GPU: no pinning
    assert worker_env(shared, 3, 2) == {**shared, "CUDA_VISIBLE_DEVICES": "1"} and worker_env({}, 4, 2) == {"CUDA_VISIBLE_DEVICES": "0"}
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "nvidia-cuda-mps-control" in mps_unavailable_reason()
    with pytest.raises(RuntimeError, match="not on the PATH"):
        MPSDaemon(tmp_path).__enter__()
    ledger = TimingLedger(tmp_path)
    _train_stages_concurrently([], tmp_path, "fp", True, 1, ledger, mps=True)  # no daemon: the trainings still run
    assert ledger.current["concurrency"]["mps"] is False and "PATH" in ledger.current["concurrency"]["mps_error"]
    assert "without MPS" in capsys.readouterr().err

    bin_dir, log = tmp_path / "bin", tmp_path / "mps.log"
    bin_dir.mkdir()
    _fake_mps_control(bin_dir, log)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert mps_unavailable_reason() is None
    ledger = TimingLedger(tmp_path / "second")
    _train_stages_concurrently([], tmp_path, "fp", True, 1, ledger, mps=True)
    assert ledger.current["concurrency"] == {"processes": 0, "gpus": 1, "mps": True}
    started, stopped = log.read_text().splitlines()
    assert started.startswith("args=-d pipe=") and "express4d_mps_" in started  # a private pipe folder
    assert stopped.startswith("args= ") and stopped.endswith("stdin=quit") and started.split()[1] == stopped.split()[1]
    ledger = TimingLedger(tmp_path / "third")
    _train_stages_concurrently([], tmp_path, "fp", True, 1, ledger, mps=False)
    assert ledger.current["concurrency"]["mps"] is False and len(log.read_text().splitlines()) == 2
