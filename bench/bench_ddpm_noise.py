"""Time the protocol's 1000-step DDPM row: DDPM's ancestral noise drawn per clip on the host (diffusers'
``DDPMScheduler.step`` with one CPU generator per clip, the draw before #14) against the pipeline's own draw
(``AncestralNoise``: one generator per clip on the pipeline's device, seeded from the clip's CPU generator, noise
drawn 16 steps at a time), side by side in one run, at each batch size.

Both draws get what the protocol gives the pipeline (``evaluation.scoring.pipeline_generate_fn``): one CPU
generator per clip. For reference it also times the pre-#14 draw with ONE generator on the device for the
whole batch (fast, but a clip's noise then depends on its batch: not what the protocol may use). The pipeline
samples as the benchmark's DDPM row does: ``enable_fast_sampling()`` (a bf16 denoiser on CUDA; DDPM runs the
eager loop), guidance 2.5, clips of ``--frames`` frames. Seconds per clip are timed over ``--timed-steps``
steps and extrapolated to 1000 (each step's work is the same). It also checks the seeding rule on the device:
clip 0 generated alone and inside the batch (largest abs difference, expected ~0 up to batch-size-dependent
kernels in bf16).

    python bench/bench_ddpm_noise.py --json ddpm_noise.json     # GPU: paper-size denoiser, batches 256 1024
    python bench/bench_ddpm_noise.py --smoke                    # CPU: tiny denoiser, small batches, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def host_draw():
    """The draw before #14: diffusers' ``DDPMScheduler.step`` draws each step's noise from the call's generators."""
    from express4d_hf.pipelines import mdm

    original = mdm.draws_ancestral_noise
    mdm.draws_ancestral_noise = lambda scheduler: False
    try:
        yield
    finally:
        mdm.draws_ancestral_noise = original


def generators(mode: str, batch: int, device: torch.device, seed: int):
    if mode == "one device generator (reference)":
        return torch.Generator(device=device).manual_seed(seed)
    return [torch.Generator().manual_seed(seed * 100_003 + i) for i in range(batch)]  # the protocol's: one per clip


MODES = {  # name -> (context, generator kind)
    "per-clip CPU generators, host draw (before)": host_draw,
    "per-clip generators, device draw (AncestralNoise)": contextlib.nullcontext,
    "one device generator (reference)": host_draw,
}


def time_mode(pipe, mode: str, batch: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    prompts = [f"A person is smiling and then blinking {i}" for i in range(batch)]
    kwargs = dict(num_frames=args.frames, num_inference_steps=args.timed_steps, guidance_scale=2.5, output_type="pt")
    times = []
    with MODES[mode]():
        pipe(prompts, generator=generators(mode, batch, device, 99), **{**kwargs, "num_inference_steps": 2})  # warm-up
        for r in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            pipe(prompts, generator=generators(mode, batch, device, r), **kwargs)
            sync(device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times) * args.steps / args.timed_steps
    return {"mode": mode, "batch": batch, "steps": args.steps, "timed_steps": args.timed_steps,
            "repeats": args.repeats, "seconds_per_batch": seconds, "s_per_clip": seconds / batch}  # fmt: skip


def batch_independence(pipe, batch: int, args: argparse.Namespace) -> float:
    """Largest abs difference of clip 0 generated alone and inside a batch (new draw, 2 chunks of steps)."""
    prompts = [f"A person is smiling and then blinking {i}" for i in range(batch)]
    kwargs = dict(num_frames=args.frames, num_inference_steps=20, guidance_scale=2.5, output_type="pt")
    gens = lambda n: [torch.Generator().manual_seed(1000 + i) for i in range(n)]  # noqa: E731
    together = pipe(prompts, generator=gens(batch), **kwargs).motions[0]
    alone = pipe(prompts[:1], generator=gens(1), **kwargs).motions[0]
    return float((together - alone).abs().max())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "paper"], default="paper", help="denoiser size (default paper)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024], help="default 256 1024")
    parser.add_argument("--frames", type=int, default=196, help="frames per clip (default 196, the longest)")
    parser.add_argument("--steps", type=int, default=1000, help="DDPM steps extrapolated to (default 1000)")
    parser.add_argument("--timed-steps", type=int, default=96,
                        help="steps actually run per timing (default 96: whole chunks of 16 steps of noise)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row; the median counts (default 3)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--smoke", action="store_true", help="CPU check: tiny denoiser, batches 4 8, 16 steps, 1 repeat (timings there are only a run check)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.smoke:
        # 16 timed steps: one whole chunk of AncestralNoise (fewer would time a 16-step draw for fewer steps)
        args.preset, args.batch_sizes, args.frames, args.timed_steps, args.repeats = "tiny", [4, 8], 40, 16, 1
        args.device = args.device or "cpu"

    from express4d_hf.models.mdm import MDMDenoiser
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline, make_scheduler
    from express4d_hf.training.common import run_metadata, write_json

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")  # fmt: skip
    torch.manual_seed(0)
    pipe = Express4DMDMPipeline.from_components(MDMDenoiser.from_preset(args.preset)).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddpm", pipe.scheduler.config)
    pipe.enable_fast_sampling()  # as the benchmark's rows: bf16 on CUDA (DDPM runs the eager loop)
    dtype = str(next(pipe.denoiser.parameters()).dtype).replace("torch.", "")
    print(f"hardware: {hardware}\nMDM {args.preset} ({dtype}), DDPM {args.steps} steps (timed {args.timed_steps}, "
          f"extrapolated), guidance 2.5, {args.frames} frames per clip\n")  # fmt: skip

    rows, checks = [], {}
    with torch.inference_mode():
        for batch in args.batch_sizes:
            for mode in MODES:
                rows.append(time_mode(pipe, mode, batch, args, device))
                print(f"batch {batch:5d} | {mode:52s} | {rows[-1]['s_per_clip']:.4f} s/clip", flush=True)
            checks[str(batch)] = batch_independence(pipe, batch, args)
            print(f"batch {batch:5d} | clip 0 alone vs in the batch: max abs diff {checks[str(batch)]:.2e}", flush=True)

    print("\n| DDPM noise draw | " + " | ".join(f"s/clip, batch {b}" for b in args.batch_sizes) + " |")
    print("|---|" + "---|" * len(args.batch_sizes))
    for mode in MODES:
        cells = [next(r for r in rows if r["mode"] == mode and r["batch"] == b)["s_per_clip"] for b in args.batch_sizes]
        print(f"| {mode} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    result = run_metadata(vars(args), hardware=hardware, denoiser_dtype=dtype, rows=rows,
                          batch_independence_max_abs_diff=checks)  # fmt: skip
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
