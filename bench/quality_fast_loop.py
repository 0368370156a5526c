"""Does the fast training loop train as well as the eager one? Three seeds of each, scored alike (issue #14).

"Quality unchanged: at the shortened schedule, three training seeds each of the eager and the fast loop; the fast
loop's mean R@3 and FID fall inside the range the eager loop's seeds span."

* one evaluator is trained (or ``--evaluator DIR`` reused): ``training.evaluator.train_evaluator``;
* MDM is trained with seeds 0, 1, 2 on the **eager** loop (fp32, no CUDA graph, no compile) and on the **fast**
  loop (the defaults on CUDA: bf16 autocast, the whole step replayed as one CUDA graph, and in the paper preset
  the model ``torch.compile``d at static shapes), with
  ``training.mdm.train_mdm`` and the preset's recipe otherwise unchanged (steps, batch, schedule, EMA);
* the trainings run as ``--concurrent`` processes at once on the one GPU (each with its own seed);
* each of the six models is scored with the benchmark's protocol (``evaluation.scoring.score_pipeline``: the
  preset's fast sampler and guidance, the test split, ``--replications`` replications, the same per-clip seeds);
* ``quality_fast_loop.json`` (every value, GPU, versions, seeds, the trainers' execution records),
  ``quality_fast_loop.md`` (a table and the verdict) and ``quality_fast_loop.png`` (per-seed R@3 and FID with the
  eager seeds' range shaded) go to ``--out``; the trained models stay in ``--work``.

Time. On an H200 the eager fp32 MDM step (batch 64 x 196 frames) takes about 46 ms with the GPU ~93% busy
(docs/results/bench-training-h200; the fast one 9.9 ms), so six concurrent trainings share the GPU rather than overlap: 15,000 steps
(the shortened schedule) would need about 40 minutes. With no ``--steps`` the script starts from the shortened
schedule and caps it so that the whole run fits ``--budget-min`` (estimate printed first); ``--steps N`` is never
capped. A run stops itself cleanly after ``--stop-after-min`` minutes (trainings checkpoint, scores are kept) and
the same command resumes it; finished trainings and scores are reused.

    python bench/quality_fast_loop.py --smoke                      # CPU, tiny preset, < 2 min on 2 cores
    python bench/quality_fast_loop.py --out out/quality --work runs/quality   # one GPU (run it again to resume)

``--model vqvae`` asks the same of the T2M-GPT tokenizer, scored by its test-split reconstruction error (no
evaluator): the paper presets compile its step, and a compiled VQ-VAE once learnt nothing (an Inductor bug in the
codebook's EMA update) while MDM's check passed. ``--compile`` compiles the fast loop whatever the preset says, so
a CPU can check the compiled step too (the tiny preset does not compile by default):

    python bench/quality_fast_loop.py --model vqvae --compile --preset tiny --out out/quality_vq   # CPU, ~6 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOOPS = ("eager", "fast")
SHORTENED_STEPS = {"paper": 15_000, "tiny": 1500}  # docs/results/paper-h200-shortened-2026-12-02 (MDM); tiny: its preset
VQVAE_STEPS = {"paper": 10_000, "tiny": 800}  # the shortened paper run's VQ-VAE; tiny: its preset
# What each model's check compares: (metric, title, lower is better: for the plot's arrow).
METRICS = {"mdm": (("r_precision_top3", "R@3", False), ("fid", "FID", True)),
           "vqvae": (("reconstruction_mse", "reconstruction MSE", True), ("reconstruction_l1", "reconstruction L1", True))}
TABLE_COLUMNS = {"mdm": (("r_precision_top1", "R@1 ↑"), ("r_precision_top3", "R@3 ↑"), ("fid", "FID ↓"), ("mm_dist", "MM-Dist ↓"),
                         ("diversity", "Diversity →")),
                 "vqvae": (("reconstruction_mse", "reconstruction MSE ↓"), ("reconstruction_l1", "reconstruction L1 ↓"))}
MODEL_TITLES = {"mdm": "MDM", "vqvae": "VQ-VAE (T2M-GPT's tokenizer)"}
# MDM: issue #14's criterion, the fast mean inside the eager seeds' range. The tokenizer's seeds agree to ~0.005 in
# MSE, so a two-sided range would fail a fast loop for training slightly *better*; its check guards against
# regressions: the fast mean no worse than the worst eager seed.
ONE_SIDED = {"mdm": False, "vqvae": True}
EVALUATOR_STEPS = {"paper": 10_000, "tiny": 600}  # the shortened run's evaluator (10k movement + 10k contrastive)
# H200, paper presets, one process alone (docs/results/bench-training-h200): ms per step and GPU busy share
H200 = {"eager": (45.7, 0.93), "fast": (9.87, 0.90), "movement": (1.35, 0.61), "contrastive": (4.02, 0.84)}  # fast: + compile
OVERHEAD_S = 120.0  # process start, data, text embeddings (measured runs: 60-90 s), compiling the fast step (~25 s)
SCORE_S = 15.0  # one model: 3 replications of the test split with the fast sampler on an H200
STOP = {"now": False}  # set by SIGTERM
CONTENTION = 1.1  # concurrent processes time-slice the GPU: a little worse than the sum of their busy time


# --- plan and estimate ---------------------------------------------------------------------------------------
def _train_s(kinds: list[str], steps: int, evaluator_steps: int, concurrent: int) -> float:
    """Training seconds of ``kinds`` ("eager", "fast", "evaluator") sharing one H200: the sum of their GPU-busy
    time (processes time-slice the GPU), never less than the longest one alone."""
    alone, busy = [], []
    for kind in kinds:
        if kind == "evaluator":
            alone.append(evaluator_steps * (H200["movement"][0] + H200["contrastive"][0]) / 1000)
            busy.append(evaluator_steps * (H200["movement"][0] * H200["movement"][1]
                                           + H200["contrastive"][0] * H200["contrastive"][1]) / 1000)  # fmt: skip
        else:
            alone.append(H200[kind][0] * steps / 1000)
            busy.append(H200[kind][0] * H200[kind][1] * steps / 1000)
    if not kinds:
        return 0.0
    waves = math.ceil(len(kinds) / max(1, concurrent))
    return max(max(alone), CONTENTION * sum(busy), sum(alone) / max(1, concurrent) if waves > 1 else 0.0)


def estimate_s(steps: int, evaluator_steps: int, seeds: int, concurrent: int, train_evaluator: bool, replications: int,
               gpus: int = 1) -> float:  # fmt: skip
    """Seconds of the whole run on H200s (paper preset): start-up, the trainings (dealt round-robin over ``gpus`` in
    the order ``run_jobs`` starts them; the busiest GPU counts) and the scoring of the six models."""
    order = (["evaluator"] if train_evaluator else []) + ["eager"] * seeds + ["fast"] * seeds
    per_gpu = max(1, concurrent // max(1, gpus))
    train = max(_train_s(order[g::gpus], steps, evaluator_steps, per_gpu) for g in range(max(1, gpus)))
    return OVERHEAD_S + train + 2 * seeds * SCORE_S * replications / 3


def capped_steps(start: int, budget_s: float, **kwargs: Any) -> int:
    """The largest multiple of 500 (at most ``start``) whose estimate fits ``budget_s`` (at least 500)."""
    steps = start
    while steps > 500 and estimate_s(steps, **kwargs) > budget_s:
        steps -= 500
    return steps


def job_configs(preset: str, steps: int, evaluator_steps: int, seeds: list[int], smoke: bool, model: str = "mdm",
                force_compile: bool = False) -> dict[str, Any]:  # fmt: skip
    """name -> training config: ``evaluator`` (MDM only: it scores the samples) and ``<model>_<loop>_seed<k>``."""
    from express4d_hf.training.evaluator import EvaluatorTrainConfig
    from express4d_hf.training.mdm import MDMTrainConfig
    from express4d_hf.training.t2m_gpt import VQVAETrainConfig

    jobs: dict[str, Any] = {}
    if model == "mdm":
        jobs["evaluator"] = EvaluatorTrainConfig.preset(preset, seed=0).with_max_steps(evaluator_steps)
    for loop in LOOPS:
        for seed in seeds:
            if model == "mdm":
                config = MDMTrainConfig.preset(preset, seed=seed, max_steps=steps, sample_every=0)
            else:
                config = VQVAETrainConfig.preset(preset, seed=seed, max_steps=steps)
            if smoke:
                config = replace(config, warmup_steps=min(config.warmup_steps, max(1, steps // 10)), checkpoint_every=steps)
            if loop == "eager":  # the plain loop: fp32, no CUDA graph, no compile
                config = replace(config, mixed_precision="no", cuda_graph=False, compile=False)
            else:  # the defaults: bf16 on a GPU, the whole step as one CUDA graph, compiled where the preset says so
                config = replace(config, mixed_precision=None, cuda_graph=True, compile=config.compile or force_compile)
            jobs[f"{model}_{loop}_seed{seed}"] = config
    return jobs


def _past(deadline: float | None, margin: float = 0.0) -> bool:
    return STOP["now"] or (deadline is not None and time.time() + margin > deadline)


# --- trainings -----------------------------------------------------------------------------------------------
def _done(folder: Path, config: Any) -> bool:
    try:
        return json.loads((folder / "quality_job.json").read_text())["config"] == json.loads(json.dumps(asdict(config), default=str))
    except (OSError, KeyError, json.JSONDecodeError):
        return False


def run_job(name: str, config: Any, data_dir: str, folder: str) -> dict[str, Any]:
    """Train one job with the project's trainer (resuming its checkpoints) and mark it done."""
    from express4d_hf.core.io import atomic_write_text

    folder_path = Path(folder)
    start = time.time()
    if name == "evaluator":
        from express4d_hf.training.evaluator import train_evaluator

        train_evaluator(data_dir, folder_path, config, progress=False, resume=True)
    elif name.startswith("vqvae_"):
        from express4d_hf.training.t2m_gpt import train_vqvae

        train_vqvae(data_dir, folder_path, config, progress=False, resume=True)
    else:
        from express4d_hf.training.mdm import train_mdm

        train_mdm(data_dir, folder_path, config, progress=False, resume=True)
    record = {"name": name, "config": json.loads(json.dumps(asdict(config), default=str)), "seconds": round(time.time() - start, 1)}
    atomic_write_text(folder_path / "quality_job.json", json.dumps(record, indent=2) + "\n")
    return record


def _job_process(name: str, config: Any, data_dir: str, folder: str, env: dict[str, str]) -> None:
    os.environ.update(env)  # before CUDA starts in this process: its GPU, the MPS daemon's pipe
    from express4d_hf.training.common import TrainingInterrupted

    try:
        run_job(name, config, data_dir, folder)
    except TrainingInterrupted as err:
        print(f"[{name}] {err}", flush=True)
        sys.exit(3)


def _last_step(folder: Path) -> int | None:
    """The last logged step of a training folder (its ``*_losses.jsonl``), for progress lines."""
    steps = []
    for log in list(folder.glob("*_losses.jsonl")) + list(folder.glob("checkpoints/*/*_losses.jsonl")):
        try:
            lines = log.read_text().splitlines()
            steps.append((log.stat().st_mtime, json.loads(lines[-1])["step"]))
        except (OSError, IndexError, KeyError, json.JSONDecodeError):
            continue
    return max(steps)[1] if steps else None


def run_jobs(jobs: dict[str, Any], data_dir: Path, work: Path, concurrent: int, deadline: float | None, gpus: int = 1,
             mps: bool = False) -> bool:  # fmt: skip
    """Run the unfinished jobs, ``concurrent`` at a time (processes; in this process when 1). True when all finished;
    False when the deadline stopped them (each saved a checkpoint; the same command resumes). ``mps``: the
    processes share each GPU through a private CUDA MPS daemon (express4d_hf.training.gpu_sharing), or without
    it when it does not start."""
    from express4d_hf.training.gpu_sharing import mps_client_env

    with mps_client_env(mps and concurrent > 1) as (env, error):
        if error:
            print(f"sharing the GPU without MPS ({error})", flush=True)
        elif env:
            print("the trainings share the GPU through a private CUDA MPS daemon", flush=True)
        return _run_jobs(jobs, data_dir, work, concurrent, deadline, gpus, env)


def _run_jobs(jobs: dict[str, Any], data_dir: Path, work: Path, concurrent: int, deadline: float | None, gpus: int,
              env: dict[str, str]) -> bool:  # fmt: skip
    todo = [(n, c) for n, c in jobs.items() if not _done(work / n, c)]
    for name in jobs:
        if all(name != n for n, _ in todo):
            print(f"[{name}] finished earlier: reused", flush=True)
    if not todo:
        return True
    if concurrent <= 1:
        for name, config in todo:
            if _past(deadline):
                return False
            print(f"[{name}] training", flush=True)
            run_job(name, config, str(data_dir), str(work / name))
        return True
    import multiprocessing

    from express4d_hf.training.gpu_sharing import worker_env

    context = multiprocessing.get_context("spawn")
    running: dict[str, Any] = {}
    failed: list[str] = []
    stopped = False
    order = sorted(todo, key=lambda item: (item[0] != "evaluator", "eager" not in item[0]))  # the longest first
    started, last_report, t0 = 0, time.time(), time.time()
    while order or running:
        if time.time() - last_report > 60:  # a progress line a minute: the children log nothing
            last_report = time.time()
            parts = [f"{name} {_last_step(work / name) or 0}/{jobs[name].max_steps}" for name in running]
            print(f"[{(time.time() - t0) / 60:.1f} min] " + ", ".join(parts), flush=True)
        while order and len(running) < concurrent and not stopped:
            name, config = order.pop(0)
            process_env = worker_env(env, started, gpus)
            started += 1
            process = context.Process(target=_job_process, args=(name, config, str(data_dir), str(work / name), process_env), name=f"quality-{name}")
            process.start()
            running[name] = process
            print(f"[{name}] training (pid {process.pid})", flush=True)
        if _past(deadline) and not stopped:
            print(f"time limit: stopping {len(running)} training(s); each saves a checkpoint, run the same command to resume", flush=True)
            stopped = True
            order.clear()
            for process in running.values():
                process.terminate()  # SIGTERM: the trainer checkpoints at its next step and exits
        for name, process in list(running.items()):
            if not process.is_alive():
                process.join()
                del running[name]
                if process.exitcode == 0:
                    print(f"[{name}] done", flush=True)
                elif not stopped:
                    failed.append(f"{name} (exit code {process.exitcode})")
        time.sleep(0.5)
    if failed:
        raise RuntimeError("training failed: " + ", ".join(failed))
    return not stopped


# --- scoring -------------------------------------------------------------------------------------------------
def score_models(names: list[str], work: Path, data_dir: Path, preset: str, replications: int, max_test_clips: int | None,
                 sampler_steps: int | None, deadline: float | None) -> dict[str, Any] | None:  # fmt: skip
    """Each model on the test split with the benchmark's fast row (cached per model in ``work/scores``)."""
    import torch

    from express4d_hf.apps.benchmark import BenchmarkConfig
    from express4d_hf.core.io import atomic_write_text
    from express4d_hf.data.hub import load_express4d
    from express4d_hf.data.splits import clips_from_split
    from express4d_hf.evaluation.protocol import EvaluationResult, evaluator_fingerprint
    from express4d_hf.evaluation.scoring import Sampling, score_pipeline, test_subset
    from express4d_hf.models.evaluator import TextMotionEvaluator
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline

    bench = BenchmarkConfig.preset_config(preset)
    sampling = Sampling(sampler=bench.fast_sampler, steps=sampler_steps or bench.fast_steps, guidance_scale=bench.guidance_scale,
                        guidance_rescale=bench.fast_guidance_rescale, eta=bench.fast_eta, fast_sampling=bench.fast_sampling)  # fmt: skip
    evaluator = TextMotionEvaluator.from_pretrained(work / "evaluator").eval()
    clips = test_subset(clips_from_split(load_express4d(data_dir, progress=False)["test"]), max_test_clips)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    key = {"replications": replications, "clips": len(clips), "sampling": sampling.describe(), "evaluator": evaluator_fingerprint(evaluator)}
    scores: dict[str, Any] = {}
    for name in names:
        cache = work / "scores" / f"{name}.json"
        marker = json.loads((work / name / "quality_job.json").read_text())
        if cache.exists():
            saved = json.loads(cache.read_text())
            if saved["key"] == {**key, "trained": marker["config"]}:
                scores[name] = saved["result"]
                continue
        if _past(deadline, margin=2 * SCORE_S):
            return None
        print(f"[{name}] scoring on {len(clips)} test clips x {replications} replications", flush=True)
        pipe = Express4DMDMPipeline.from_pretrained(work / name).to(device)
        result = score_pipeline(pipe, evaluator, clips, sampling, replications=replications, seed=0, progress=False)
        scores[name] = result.to_dict()
        atomic_write_text(cache, json.dumps({"key": {**key, "trained": marker["config"]}, "result": scores[name]}, indent=2) + "\n")
        del pipe
        if device == "cuda":
            torch.cuda.empty_cache()
        print(f"[{name}] R@3 {EvaluationResult.from_dict(scores[name]).mean('r_precision_top3'):.3f}, "
              f"FID {EvaluationResult.from_dict(scores[name]).mean('fid'):.3f}", flush=True)  # fmt: skip
    return {"scores": scores, "protocol": {**key, "split": "test", "seed": 0}}


def reconstruction_scores(names: list[str], work: Path) -> dict[str, Any]:
    """Each tokenizer's test-split reconstruction error, as its trainer measured it (normalised units)."""
    scores: dict[str, Any] = {}
    clips = 0
    for name in names:
        recon = json.loads((work / name / "training_metadata.json").read_text())["reconstruction_test"]
        scores[name] = {"metrics": {"reconstruction_mse": {"mean": recon["mse"], "ci95": 0.0},
                                    "reconstruction_l1": {"mean": recon["l1"], "ci95": 0.0}},
                        "mean_predictor_mse": recon.get("mean_mse")}  # fmt: skip
        clips = recon["clips"]  # the same test split for every tokenizer
    return {"scores": scores, "protocol": {"split": "test", "clips": clips, "measure": "encode -> decode error on the valid frames"}}


# --- report --------------------------------------------------------------------------------------------------
def summarize(scores: dict[str, Any], seeds: list[int], model: str = "mdm") -> dict[str, Any]:
    """Per metric: the eager seeds' range, the fast seeds' mean, whether the mean lies inside the range, and
    whether it is no worse than the worst eager seed; the verdict uses the model's criterion (``ONE_SIDED``)."""
    out: dict[str, Any] = {}
    for metric, _, lower_better in METRICS[model]:
        eager = [scores[f"{model}_eager_seed{s}"]["metrics"][metric]["mean"] for s in seeds]
        fast = [scores[f"{model}_fast_seed{s}"]["metrics"][metric]["mean"] for s in seeds]
        fast_mean = sum(fast) / len(fast)
        no_worse = fast_mean <= max(eager) if lower_better else fast_mean >= min(eager)
        out[metric] = {"eager": eager, "fast": fast, "eager_range": [min(eager), max(eager)], "fast_mean": fast_mean,
                       "inside": min(eager) <= fast_mean <= max(eager), "no_worse": no_worse}  # fmt: skip
    key = "no_worse" if ONE_SIDED[model] else "inside"
    out["criterion"] = "the fast mean no worse than the worst eager seed" if ONE_SIDED[model] else "the fast mean inside the eager seeds' range"
    out["verdict"] = "pass" if all(out[m][key] for m, _, _ in METRICS[model]) else "fail"
    return out


def write_report(out: Path, report: dict[str, Any]) -> None:
    from express4d_hf.core.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "quality_fast_loop.json", json.dumps(report, indent=2, default=str) + "\n")
    summary, seeds, model = report["summary"], report["seeds"], report.get("model", "mdm")
    columns = TABLE_COLUMNS[model]
    lines = [
        f"# Eager vs fast training loop: {MODEL_TITLES[model]} ({report['preset']} preset, {report['steps']} steps)", "",
        f"GPU: {report['hardware']}; {', '.join(f'{k} {v}' for k, v in report['versions'].items())}; seeds {seeds}.", "",
        "| Loop | Seed | " + " | ".join(title for _, title in columns) + " | train s | loop ms/step | precision, step |",
        "|---|---|" + "---|" * len(columns) + "---|---|---|",
    ]  # fmt: skip
    for name, entry in report["models"].items():
        m = entry["metrics"]
        cell = lambda k: f"{m[k]['mean']:.3f}" + (f" ± {m[k]['ci95']:.3f}" if m[k]["ci95"] else "")  # noqa: E731
        ex = entry.get("execution") or {}
        ms = 1000 * entry["loop_seconds"] / max(1, entry["steps"]) if entry.get("loop_seconds") else float("nan")
        lines.append(f"| {entry['loop']} | {entry['seed']} | " + " | ".join(cell(k) for k, _ in columns) +
                     f" | {entry.get('train_seconds', float('nan')):.0f} | {ms:.1f} | "
                     f"{ex.get('mixed_precision')}, {'graph' if ex.get('cuda_graph') else 'eager'}{' + compile' if ex.get('compile') else ''} |")  # fmt: skip
    lines.append("")
    for metric, title, _ in METRICS[model]:
        s = summary[metric]
        where = "inside" if s["inside"] else ("outside, on the better side" if s.get("no_worse") else "OUTSIDE, worse")
        lines.append(f"- {title}: eager seeds span [{s['eager_range'][0]:.4f}, {s['eager_range'][1]:.4f}]; fast mean "
                     f"{s['fast_mean']:.4f}: {where}")  # fmt: skip
    p = report["protocol"]
    checked = " and ".join(title for _, title, _ in METRICS[model])
    if model == "mdm":
        protocol = (f"Protocol: {p['clips']} test clips, {p['replications']} replications (mean ± 95% interval), sampling "
                    f"{p['sampling']}, evaluator `{p['evaluator']}` ({report['evaluator_steps']}).")  # fmt: skip
    else:
        baseline = [entry.get("mean_predictor_mse") for entry in report["models"].values()]
        protocol = (f"Protocol: {p['clips']} test clips, {p['measure']}, normalised units (predicting the mean scores "
                    f"MSE {baseline[0]:.3f}: a tokenizer near it learnt nothing)." if baseline and baseline[0] else
                    f"Protocol: {p['clips']} test clips, {p['measure']}, normalised units.")  # fmt: skip
    criterion = summary.get("criterion", "the fast mean inside the eager seeds' range")
    lines += ["", f"**Verdict: {summary['verdict']}** ({checked}: {criterion}).", "",
              f"{protocol} {report.get('steps_note', '')}", ""]  # fmt: skip
    atomic_write_text(out / "quality_fast_loop.md", "\n".join(lines))
    plot(out / "quality_fast_loop.png", report)


def plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from express4d_hf.core.io import atomic_path

    seeds, model = report["seeds"], report.get("model", "mdm")
    fig, axes = plt.subplots(1, len(METRICS[model]), figsize=(9, 3.6), dpi=110)
    for ax, (metric, name, lower_better) in zip(axes, METRICS[model]):
        title = f"{name} {'↓' if lower_better else '↑'}"
        s = report["summary"][metric]
        ax.axhspan(*s["eager_range"], color="tab:blue", alpha=0.15, label="eager seeds' range")
        for offset, loop, color, marker in ((-0.08, "eager", "tab:blue", "o"), (0.08, "fast", "tab:orange", "s")):
            means = [report["models"][f"{model}_{loop}_seed{k}"]["metrics"][metric]["mean"] for k in seeds]
            cis = [report["models"][f"{model}_{loop}_seed{k}"]["metrics"][metric]["ci95"] for k in seeds]
            ax.errorbar([i + offset for i in range(len(seeds))], means, yerr=cis, fmt=marker, color=color, capsize=3, label=f"{loop} loop")
        ax.axhline(s["fast_mean"], color="tab:orange", linestyle="--", label="fast mean")
        ax.set_xticks(range(len(seeds)), [f"seed {k}" for k in seeds])
        where = "inside" if s["inside"] else ("outside, better" if s.get("no_worse") and ONE_SIDED[model] else "outside")
        ax.set_title(f"{title}: fast mean {where}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{MODEL_TITLES[model]} {report['preset']}, {report['steps']} steps, {report['hardware']}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "paper"], default=None, help="default: paper on a GPU, tiny on a CPU")
    parser.add_argument("--model", choices=sorted(METRICS), default="mdm",
                        help="what to train: mdm (scored by the evaluator) or vqvae (T2M-GPT's tokenizer, by its reconstruction error)")
    parser.add_argument("--compile", action="store_true", help="compile the fast loop's model even where the preset does not (e.g. tiny on a CPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: MDM's shortened schedule, paper 15000, capped to fit --budget-min; "
                             "VQ-VAE: paper 10000, tiny 800)")
    parser.add_argument("--budget-min", type=float, default=12.0, help="wall-clock budget the default --steps is capped to (estimate on an H200)")
    parser.add_argument("--stop-after-min", type=float, default=None,
                        help="stop cleanly after this many minutes (default: 9.3 on a GPU, none on a CPU); run again to resume")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of each loop (default 0,1,2)")
    parser.add_argument("--concurrent", type=int, default=None, help="trainings at once as processes (default: all on a GPU, 1 on a CPU)")
    parser.add_argument("--gpus", type=int, default=1, help="deal the trainings round-robin over this many GPUs (default 1)")
    parser.add_argument("--mps", action=argparse.BooleanOptionalAction, default=True,
                        help="on a GPU, the concurrent trainings share it through a private CUDA MPS daemon (default: on; "
                        "without it they take turns; the time estimate assumes they take turns)")  # fmt: skip
    parser.add_argument("--evaluator-steps", type=int, default=None, help="evaluator training steps (default: paper 10000, tiny 600)")
    parser.add_argument("--evaluator", default=None, metavar="DIR", help="reuse this trained evaluator folder instead of training one")
    parser.add_argument("--replications", type=int, default=3, help="protocol replications per model (default 3)")
    parser.add_argument("--max-test-clips", type=int, default=0, help="test subset in whole groups of 32 (0: the whole split)")
    parser.add_argument("--data", default=None, help="dataset (default: the embedded procedural corpus)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny preset, a small synthetic corpus, a few dozen steps (< 2 min)")
    parser.add_argument("--out", default="runs/quality_fast_loop", help="reports go here")
    parser.add_argument("--work", default=None, help="trained models, checkpoints and scores (default: OUT/work)")
    parser.add_argument("--estimate-only", action="store_true", help="print the plan and the estimate, then stop")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    preset = args.preset or ("tiny" if args.smoke or not cuda else "paper")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    concurrent = args.concurrent or (2 * len(seeds) + 1 if cuda or (preset == "paper" and args.estimate_only) else 1)
    if cuda and args.gpus > torch.cuda.device_count():
        parser.error(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} GPU(s)")
    evaluator_steps = args.evaluator_steps or (20 if args.smoke else EVALUATOR_STEPS[preset])
    replications = 2 if args.smoke and args.replications == 3 else args.replications
    max_test_clips = args.max_test_clips or (32 if args.smoke else None)
    sampler_steps = 5 if args.smoke else None
    shortened = SHORTENED_STEPS[preset]
    kwargs = dict(evaluator_steps=evaluator_steps, seeds=len(seeds), concurrent=concurrent, train_evaluator=args.evaluator is None,
                  replications=replications, gpus=args.gpus)  # fmt: skip
    steps_note = ""
    model = args.model
    if args.steps:
        steps = args.steps
    elif args.smoke:
        steps, steps_note = 30, "Smoke run: 30 steps of the tiny preset on a small synthetic corpus (plumbing only, not a quality figure)."
    elif model == "vqvae":
        steps = VQVAE_STEPS[preset]
    elif preset == "paper":
        steps = capped_steps(shortened, 60 * args.budget_min, **kwargs)
        if steps < shortened:
            steps_note = (f"Steps: {steps}, not the shortened schedule's {shortened}: six trainings of {shortened} steps "
                          f"would take about {estimate_s(shortened, **kwargs) / 60:.0f} min on one H200 (the eager fp32 step "
                          f"is ~46 ms with the GPU ~93% busy), so the run was capped to a {args.budget_min:g}-min budget.")  # fmt: skip
    else:
        steps = shortened
    stop_after = args.stop_after_min if args.stop_after_min is not None else (9.3 if cuda else 0)
    started = time.time()
    deadline = started + 60 * stop_after if stop_after else None
    estimate = estimate_s(steps, **kwargs)
    compiled = " + compile" if preset == "paper" or args.compile else ""
    scorer = (f"evaluator {'reused from ' + args.evaluator if args.evaluator else f'{evaluator_steps} steps'}" if model == "mdm"
              else "test-split reconstruction error")  # fmt: skip
    print(f"plan: {scorer}; {MODEL_TITLES[model]} {preset}, "
          f"{steps} steps, seeds {seeds}, eager (fp32, no graph) and fast ({'the defaults: bf16 + CUDA graph' + compiled if cuda else 'the CPU defaults' + compiled}); "
          f"{concurrent} at once" + (f"; {replications} replications on {'the whole test split' if max_test_clips is None else f'{max_test_clips} test clips'}"
                                     if model == "mdm" else ""),
          flush=True)  # fmt: skip
    if preset == "tiny" and cuda and model == "mdm":
        print("estimated time on one H200: about 2.5 min (measured: 143 s, docs/results/quality-fast-loop-h200-tiny)", flush=True)
    if preset == "paper" and model == "mdm":
        print(f"estimated time on {'one H200' if args.gpus == 1 else f'{args.gpus} H200s'}: {estimate / 60:.1f} min for {steps} "
              f"steps (the shortened schedule's {shortened} steps: {estimate_s(shortened, **kwargs) / 60:.1f} min)"
              + (f"; this invocation stops itself cleanly after {stop_after:g} min if unfinished (run the same command "
                 "again to resume)" if stop_after else ""), flush=True)  # fmt: skip
    if steps_note:
        print(steps_note, flush=True)
    if args.estimate_only:
        return 0

    from express4d_hf.data.hub import resolve_dataset_dir
    from express4d_hf.training.common import run_metadata

    if args.smoke:
        from express4d_hf.data.hub import build_dataset
        from express4d_hf.data.synthetic import synthesize_release

        built = work / "data" / "built"
        if not (built / "express4d.json").exists():
            release = synthesize_release(work / "data" / "release", num_clips=290, participants=6, seed=3, progress=False)
            build_dataset(release, built, progress=False)
        data_dir = built
    else:
        data_dir = resolve_dataset_dir(args.data, progress=False)
    work.mkdir(parents=True, exist_ok=True)
    jobs = job_configs(preset, steps, evaluator_steps, seeds, args.smoke, model, args.compile)
    if args.evaluator and model == "mdm":
        jobs.pop("evaluator")
        link = work / "evaluator"
        if not link.exists():
            link.symlink_to(Path(args.evaluator).resolve())
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: STOP.update(now=True))  # `timeout`: stop the trainings cleanly
    try:
        finished = run_jobs(jobs, data_dir, work, concurrent, deadline, args.gpus, mps=args.mps and cuda)
        names = [n for n in jobs if n.startswith(f"{model}_")]
        if not finished:
            scored = None
        elif model == "vqvae":
            scored = reconstruction_scores(names, work)
        else:
            scored = score_models(names, work, data_dir, preset, replications, max_test_clips, sampler_steps, deadline)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if scored is None:
        print(f"stopped after {(time.time() - started) / 60:.1f} min; run the same command again to resume", flush=True)
        return 3

    models = {}
    for name in names:
        meta = json.loads((work / name / "training_metadata.json").read_text())
        _, loop, seed = name.split("_")
        models[name] = {"loop": loop, "seed": int(seed.removeprefix("seed")), **scored["scores"][name], "steps": meta.get("steps"),
                        "train_seconds": meta.get("train_seconds"), "loop_seconds": meta.get("loop_seconds_all_runs"),
                        "samples_per_s": meta.get("samples_per_s"), "execution": meta.get("execution")}  # fmt: skip
        execution = meta.get("execution") or {}
        if loop == "fast" and cuda and not (execution.get("cuda_graph") and execution.get("mixed_precision") == "bf16"):
            print(f"warning: {name} did not run bf16 + CUDA graph: {execution}", flush=True)
    meta = run_metadata({"preset": preset, "steps": steps, "seeds": seeds, "model": model})
    report = {
        "model": model, "preset": preset, "steps": steps, "steps_note": steps_note, "seeds": seeds,
        "shortened_schedule_steps": shortened if model == "mdm" else VQVAE_STEPS[preset],
        "evaluator_steps": None if model != "mdm" else (f"trained once here, {evaluator_steps} steps" if args.evaluator is None
                                                         else f"reused from {args.evaluator}"),  # fmt: skip
        "hardware": meta["hardware"], "versions": meta["versions"], "created": meta["created"], "concurrent": concurrent,
        "estimate_s": round(estimate, 1), "wall_s_this_invocation": round(time.time() - started, 1),
        "protocol": scored["protocol"], "models": models, "summary": summarize(scored["scores"], seeds, model),
    }  # fmt: skip
    write_report(out, report)
    print((out / "quality_fast_loop.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
