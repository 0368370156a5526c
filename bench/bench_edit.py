"""Benchmark editing with the MDM pipeline: an edit costs no more than 1.2x a generation of the same length and steps.

Times, per clip, a plain generation and edits of the same length, steps and sampler (DDIM, classifier-free
guidance 2.5): keeping the upper face (``keep_channels="upper_face"``), keeping spans (``keep_frames``: in-betweening)
and both, on the eager path and, on a GPU, on the CUDA-graph fast path (``enable_fast_sampling``: the kept source and
its weights are inputs of the recording). An edit adds to every step one blend of the clean prediction with the
source (``torch.lerp``) and, once per call, resampling the source and building the seam weights on the host.
Also times ``compose`` of a 20 s timeline against generating its windows one by one.

Besides the end-to-end times, the work an edit adds (host-side plan, source normalisation, one lerp per step) is
timed on its own: ``1 + added / generation`` is the edit's cost ratio without the other processes' noise.
Every repeat runs every case in turn; on a CPU the ratio is taken on process CPU time (the minimum over repeats),
which other processes on a shared machine disturb far less than wall time (also recorded). On a GPU it is the
median wall time.

    python bench/bench_edit.py --threads 1 --json docs/figures/bench_edit_cpu.json --png docs/figures/bench_edit_cpu.png
    python bench/bench_edit.py --device cuda --batches 1,64 --json bench_edit_gpu.json   # eager + CUDA-graph path

The weights are random: timing does not depend on them. Medians of ``--repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

PROMPT = "A person is smiling broadly and then raising their eyebrows"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def source_take(seconds: float) -> Any:
    from express4d_hf.core.motion import FaceMotion

    t = np.arange(int(seconds * 60)) / 60
    values = 0.3 + 0.2 * np.sin(2 * np.pi * 0.6 * t[:, None] + np.linspace(0, 3, 61)[None])
    return FaceMotion(values.astype(np.float32), fps=60)  # captured at 60 fps: the edit resamples it


def timings(calls: dict[str, Any], device: torch.device, repeats: int) -> dict[str, dict[str, float]]:
    """Wall and process-CPU seconds of each call, interleaved (every repeat runs every call in turn, so load from
    other processes hits all of them alike): ``{name: {"wall_median", "wall_min", "cpu_median", "cpu_min"}}``."""
    for call in calls.values():
        call()  # warm-up (and, on the fast path, the recording)
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            sync(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall_median": statistics.median(wall[name]), "wall_min": min(wall[name]),
                   "cpu_median": statistics.median(cpu[name]), "cpu_min": min(cpu[name])} for name in calls}  # fmt: skip


def added_work(pipe, edit: dict, frames: int, steps: int, batch: int, device: torch.device, repeats: int = 20) -> float:
    """Seconds of the work an edit adds to a generation, timed on its own (so other processes barely disturb it):
    building the plan on the host (resampling the source, masks, seam weights), normalising the source, and one
    ``torch.lerp`` of the clean prediction per step on ``[batch, frames, 61]``."""
    from express4d_hf.pipelines.editing import prepare_edit

    if not edit:
        return 0.0
    fps = float(pipe.normalizer.config.fps)
    keep = {k: v for k, v in edit.items() if k != "motion"}
    x0 = torch.randn(batch, frames, 61, device=device)

    def work():
        plan = prepare_edit(edit["motion"], frames, fps, **keep)
        source = torch.from_numpy(plan.source).to(device).expand(batch, -1, -1)
        weights = torch.from_numpy(plan.weights).to(device).expand(batch, -1, -1)
        source = pipe.normalizer.normalize(source).float()
        out = x0
        for _ in range(steps):
            out = torch.lerp(x0, source, weights)
        return out

    best = float("inf")
    work()
    for _ in range(repeats):
        sync(device)
        start = time.process_time() if device.type == "cpu" else time.perf_counter()
        work()
        sync(device)
        best = min(best, (time.process_time() if device.type == "cpu" else time.perf_counter()) - start)
    return best


def time_path(pipe, path: str, frames: int, steps: int, batch: int, repeats: int, device: torch.device) -> list[dict]:
    seconds = frames / 20.0
    take = source_take(seconds)
    cases = {
        "generate": {},
        "edit: keep upper_face": dict(motion=take, keep_channels="upper_face"),
        "edit: keep spans (in-betweening)": dict(motion=take, keep_frames=[(0, seconds / 3), (2 * seconds / 3, seconds)]),
        "edit: keep upper_face + spans": dict(motion=take, keep_channels="upper_face", keep_frames=[(0, 1.0)]),
    }
    prompts = [PROMPT] * batch
    calls = {name: (lambda edit=edit: pipe(prompts, num_frames=frames, num_inference_steps=steps, guidance_scale=2.5,
                                           generator=torch.Generator().manual_seed(0), **edit))
             for name, edit in cases.items()}  # fmt: skip
    measured = timings(calls, device, repeats)
    key = "cpu_min" if device.type == "cpu" else "wall_median"  # CPU time: robust on a shared machine
    base = measured["generate"][key]
    rows = []
    for name, t in measured.items():
        added = added_work(pipe, cases[name], frames, steps, batch, device)
        rows.append({"path": path, "case": name, "batch": batch, "frames": frames, "steps": steps, **t,
                     "measure": key, "seconds_per_clip": t[key] / batch, "ratio_to_generate": t[key] / base,
                     "added_work_s": added, "added_work_ratio": 1.0 + added / base})  # fmt: skip
        print(f"{path:>6} batch {batch:>2} {name:<34} {t[key] * 1000 / batch:9.1f} ms/clip ({key})  x{t[key] / base:.3f}"
              f"   [wall median x{t['wall_median'] / measured['generate']['wall_median']:.3f}; added work "
              f"{added * 1000:.2f} ms = x{1 + added / base:.4f}]", flush=True)  # fmt: skip
    return rows


def time_compose(pipe, steps: int, repeats: int, device: torch.device) -> dict:
    """``compose`` of a 20 s timeline against generating windows of the same lengths without the kept overlap."""
    timeline = [(PROMPT, 3.0), ("A person is frowning", 4.0), ("A person is pressing their lips together", 2.5),
                ("A person is winking with their left eye", 0.5), ("A person is yawning", 6.0),
                ("A person is smiling softly", 4.0)]  # fmt: skip
    windows = [max(20, (20 if i else 0) + int(round(s * 20))) for i, (_, s) in enumerate(timeline)]
    calls = {
        "compose": lambda: pipe.compose(timeline, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)),
        "plain windows": lambda: [pipe(PROMPT, num_frames=n, num_inference_steps=steps) for n in windows],
    }
    measured = timings(calls, device, max(1, repeats // 2))
    key = "cpu_min" if device.type == "cpu" else "wall_median"
    ratio = measured["compose"][key] / measured["plain windows"][key]
    print(f"compose 20 s (6 windows): {measured['compose'][key]:.2f} s; the same windows generated plainly: "
          f"{measured['plain windows'][key]:.2f} s ({key}, x{ratio:.3f})", flush=True)  # fmt: skip
    return {"case": "compose 20 s timeline (6 windows, 1 s transitions)", "steps": steps, "measure": key,
            "seconds": measured["compose"][key], "plain_windows_seconds": measured["plain windows"][key], "ratio": ratio,
            "timings": measured}  # fmt: skip


def plot(rows: list[dict], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys((r["preset"], r["path"], r["batch"]) for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig = Figure(figsize=(8, 3.6), dpi=110)
    ax = fig.add_subplot()
    width = 0.8 / len(cases)
    for k, case in enumerate(cases):
        ratios = [next(r["ratio_to_generate"] for r in rows if (r["preset"], r["path"], r["batch"]) == g and r["case"] == case)
                  for g in groups]  # fmt: skip
        bars = ax.bar(np.arange(len(groups)) + k * width, ratios, width, label=case)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        added = [next(r["added_work_ratio"] for r in rows if (r["preset"], r["path"], r["batch"]) == g and r["case"] == case)
                 for g in groups]  # fmt: skip
        ax.scatter(np.arange(len(groups)) + k * width, added, marker="_", s=120, color="black", zorder=3,
                   label="1 + added work / generation" if k == len(cases) - 1 else None)  # fmt: skip
    ax.axhline(1.2, color="red", ls="--", lw=1, label="bound (1.2x)")
    ax.set_xticks(np.arange(len(groups)) + width * (len(cases) - 1) / 2, [f"{m} {p}\nbatch {b}" for m, p, b in groups], fontsize=8)
    ax.set_ylabel("time / generation time")
    ax.set_ylim(0, 1.45)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny,paper", help="comma-separated MDM presets (tiny, paper)")
    parser.add_argument("--paper-batches", default="1", help="batch sizes for the paper preset (slow on a CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=196)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-compose", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()

    from express4d_hf.models.mdm import MDMDenoiser
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline, make_scheduler

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows, compose = [], None
    for preset in args.preset.split(","):
        torch.manual_seed(0)
        pipe = Express4DMDMPipeline.from_components(MDMDenoiser.from_preset(preset)).to(device)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
        batches = [int(b) for b in (args.paper_batches if preset == "paper" and device.type == "cpu" else args.batches).split(",")]
        for batch in batches:
            rows += [{"preset": preset, **r} for r in time_path(pipe, "eager", args.frames, args.steps, batch, args.repeats, device)]
        if device.type == "cuda":
            pipe.enable_fast_sampling()
            for batch in batches:
                rows += [{"preset": preset, **r} for r in time_path(pipe, "graph", args.frames, args.steps, batch, args.repeats, device)]
            pipe.disable_fast_sampling()
            pipe.to(torch.float32)
        if compose is None and not args.no_compose:
            compose = {"preset": preset, **time_compose(pipe, args.steps, args.repeats, device)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    result = {"presets": args.preset, "repeats": args.repeats, "device": where, "sampler": "DDIM", "guidance_scale": 2.5, "rows": rows,
              "compose": compose, "worst_edit_ratio": max(r["ratio_to_generate"] for r in rows),
              "worst_added_work_ratio": max(r["added_work_ratio"] for r in rows)}  # fmt: skip
    print(f"worst edit / generation: x{result['worst_edit_ratio']:.3f} (timed); added work at most "
          f"x{result['worst_added_work_ratio']:.4f}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.png:
        plot(rows, args.png, f"Edit cost / generation cost: MDM, {args.frames} frames, {args.steps} DDIM steps, CFG 2.5 "
                             f"({where})")  # fmt: skip


if __name__ == "__main__":
    main()
