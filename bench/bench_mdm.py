"""Benchmark the MDM baseline: sampling time per clip (AITS) and training throughput.

AITS (average inference time per sample, seconds per generated clip, text encoding included) for the
1000-step DDPM sampler of the paper, 50-step DDIM and DPM-Solver++ swapped in with ``from_config`` and
few-step DPM-Solver++ (``--few-steps``), at batch 64 and batch 1, side by side in one run; on a GPU also
with the pipeline's fast path (``enable_fast_sampling``: bf16, the loop replayed as a CUDA graph, with and
without ``torch.compile``) and the batch-1 split into fixed cost and cost per step. Classifier-free guidance is on (guidance 2.5: the
conditional and unconditional branches run as one batched forward). Clips are ``--frames`` long (196 by
default: the longest clip, so the upper bound).

Training throughput (samples/s) of the trainer's own loss (``training.mdm.mdm_loss_fn``) on one
synthetic batch of random lengths, for a plain eager fp32 loop and for the optimised loop: bf16 autocast,
fused AdamW and ``torch.compile`` on GPU (on a CPU, bf16 and compile do not pay off: the optimised loop
there is fp32 eager with torch's default foreach AdamW, and compile can be forced with ``--compile on``;
it took 5 minutes to compile the tiny model on the 2-core machine and ran no faster).

    python bench/bench_mdm.py --preset tiny --quick          # CPU, a minute or two
    python bench/bench_mdm.py --preset paper --json mdm.json # GPU

``--quick`` times DDPM on 50 of its 1000 steps and scales linearly (the per-step work is constant) and
uses fewer repetitions. The weights are random unless ``--model DIR`` is given: timing does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_pipeline(args: argparse.Namespace, device: torch.device):
    from express4d_hf.models.mdm import MDMDenoiser
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline

    if args.model:
        from express4d_hf.pipelines.loading import load_pipeline

        pipe = load_pipeline(args.model)
    else:
        torch.manual_seed(0)
        pipe = Express4DMDMPipeline.from_components(MDMDenoiser.from_preset(args.preset))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def time_sampler(pipe, name: str, steps: int, batch: int, frames: int, repeats: int, timed_steps: int | None,
                 device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Seconds per clip for ``steps`` steps of sampler ``name`` (timing ``timed_steps`` and scaling when given)."""
    from express4d_hf.pipelines.mdm import make_scheduler

    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    run_steps = timed_steps or steps
    prompts = [f"A person is smiling and then blinking {i}" for i in range(batch)]
    pipe(prompts[:1], num_frames=frames, num_inference_steps=2)  # warm-up (allocations, kernels)
    times = []
    for r in range(repeats):
        sync(device)
        start = time.perf_counter()
        pipe(prompts, num_frames=frames, num_inference_steps=run_steps, guidance_scale=2.5,
             generator=torch.Generator().manual_seed(r))  # fmt: skip
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times) * steps / run_steps
    return {"sampler": name, "steps": steps, "batch": batch, "timed_steps": run_steps,
            "seconds_per_batch": seconds, "aits_s": seconds / batch}  # fmt: skip


def time_fast_sampling(pipe, args: argparse.Namespace, samplers, device: torch.device, repeats: int) -> list[dict[str, Any]]:
    """The pipeline's fast path (``enable_fast_sampling``): bf16 denoiser, whole sampling loop as one CUDA graph.

    At batch 1 the eager sampler is bound by kernel launches (thousands per clip), not by arithmetic: replaying
    the recorded loop removes them. Each shape is recorded once in an untimed warm-up call; with ``compile``
    the denoiser is also ``torch.compile``d (fused kernels), which costs about a minute per shape once.
    """
    rows = []
    for compile_denoiser in (False, True):
        pipe.enable_fast_sampling(compile=compile_denoiser)
        for name, steps in samplers:
            for batch in args.batch_sizes:
                time_sampler(pipe, name, steps, batch, args.frames, 1, None, device)  # record (and compile)
                row = time_sampler(pipe, name, steps, batch, args.frames, repeats, None, device)
                rows.append({**row, "mode": "bf16 + torch.compile + CUDA graph" if compile_denoiser else "bf16 + CUDA graph"})
        pipe.disable_fast_sampling()
    pipe.denoiser.to(torch.float32)
    return rows


def batch1_overhead(pipe, device: torch.device, frames: int, repeats: int = 20) -> dict[str, float]:
    """Split a replayed batch-1 call into fixed cost (text encoding, noise, copies, output) and cost per step.

    With the loop replayed, time(n steps) = fixed + n * per_step; two step counts give both.
    """
    pipe.enable_fast_sampling()
    from express4d_hf.pipelines.mdm import make_scheduler

    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    seconds = {}
    for steps in (5, 50):
        time_sampler(pipe, "ddim", steps, 1, frames, 1, None, device)  # record
        seconds[steps] = time_sampler(pipe, "ddim", steps, 1, frames, repeats, None, device)["aits_s"]
    per_step = (seconds[50] - seconds[5]) / 45
    start = time.perf_counter()
    for _ in range(repeats):
        pipe.encode_text(["A person is smiling and then blinking"])
    sync(device)
    encode = (time.perf_counter() - start) / repeats
    pipe.disable_fast_sampling()
    pipe.denoiser.to(torch.float32)
    return {"per_step_s": per_step, "fixed_s": seconds[5] - 5 * per_step, "text_encoding_s": encode, "total_50_s": seconds[50]}


def table(rows: list[dict[str, Any]], samplers, batch_sizes: list[int], title: str) -> str:
    """Markdown: one line per (sampler, steps), one column per batch size."""
    names = {"ddpm": "DDPM", "ddim": "DDIM", "dpmsolver++": "DPM-Solver++"}
    lines = [f"| {title} | steps | " + " | ".join(f"AITS batch {b} (s/clip)" for b in batch_sizes) + " |",
             "|---|---|" + "---|" * len(batch_sizes)]  # fmt: skip
    for name, steps in samplers:
        cells = []
        for batch in batch_sizes:
            row = next(r for r in rows if r["sampler"] == name and r["steps"] == steps and r["batch"] == batch)
            note = f" (from {row['timed_steps']} steps)" if row["timed_steps"] != steps else ""
            cells.append(f"{row['aits_s']:.4f}{note}")
        lines.append(f"| {names[name]} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def time_steps(step, warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds of ``warmup`` untimed-for-throughput calls of ``step`` and of ``steps`` timed calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return warm, time.perf_counter() - start


def synthetic_batch(batch: int, frames: int, text_dim: int, device: torch.device, seed: int = 0):
    """One training batch as ``training.mdm.MDMBatches`` draws it, and its ``[captions, text_dim]`` table."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, frames + 1, (batch,), generator=gen)
    mask = torch.arange(frames)[None] < lengths[:, None]
    motion = torch.randn(batch, frames, 61, generator=gen) * mask[..., None]
    table = torch.randn(batch, text_dim, generator=gen)
    batch_dict = {
        "motion": motion.to(device),
        "mask": mask.to(device),
        "lengths": lengths.to(device),
        "caption_ids": torch.arange(batch, device=device),
        "timesteps": torch.randint(0, 1000, (batch,), generator=gen).to(device),
        "noise": torch.randn(batch, frames, 61, generator=gen).to(device),
        "cond_drop": (torch.rand(batch, generator=gen) < 0.1).to(device),
    }
    return batch_dict, table


def time_training(args: argparse.Namespace, device: torch.device, optimised: bool) -> dict[str, Any]:
    """Samples/s of ``steps`` optimisation steps (after warm-up) of the trainer's loss on one batch."""
    from express4d_hf.models.mdm import MDMDenoiser
    from express4d_hf.training.mdm import MDMTrainConfig, mdm_loss_fn

    config = MDMTrainConfig.preset(args.preset)
    torch.manual_seed(0)
    model = MDMDenoiser.from_preset(args.preset).to(device).train()
    batch, table = synthetic_batch(config.batch_size, args.frames, model.config.text_dim, device)
    loss_fn = mdm_loss_fn(config, table)
    cuda = device.type == "cuda"
    use_compile = optimised and (args.compile == "on" or (args.compile == "auto" and cuda))
    use_bf16 = optimised and cuda and torch.cuda.is_bf16_supported()
    fused = optimised and cuda  # (on a CPU the fused AdamW measured no faster than the default foreach one)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.99),
                                  fused=fused or None, foreach=False if not optimised else None)  # fmt: skip
    if use_compile:
        model.compile()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(model, batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup, steps = (2, 5) if args.quick else (5, 30)
    warm, seconds = time_steps(step, warmup, steps, device)
    label = "optimised" if optimised else "plain eager fp32"
    parts = [p for p, on in (("bf16", use_bf16), ("fused AdamW", fused), ("torch.compile", use_compile)) if on]
    if optimised and not fused:
        parts.append("foreach AdamW")
    return {"loop": label, "features": ", ".join(parts) or "fp32 eager, for-loop AdamW", "batch": config.batch_size,
            "frames": args.frames, "steps": steps, "warmup_s": warm, "samples_per_s": config.batch_size * steps / seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="denoiser size (default tiny)")
    parser.add_argument("--model", default=None, help="time a trained pipeline folder instead of random weights")
    parser.add_argument("--quick", action="store_true", help="DDPM extrapolated from 50 steps, fewer repetitions")
    parser.add_argument("--frames", type=int, default=196, help="frames per clip at 20 fps (default 196)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[64, 1], help="sampling batch sizes (default 64 1)"
    )
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile in the optimised training loop (auto: on GPU only)")  # fmt: skip
    parser.add_argument("--few-steps", type=int, nargs="*", default=[12],
                        help="also time DPM-Solver++ with these step counts (default 12)")  # fmt: skip
    parser.add_argument("--skip-training", action="store_true", help="only time sampling")
    parser.add_argument("--no-fast-sampling", action="store_true",
                        help="skip the pipeline's fast-sampling rows (GPU only; the compiled ones take minutes)")  # fmt: skip
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from express4d_hf.training.common import run_metadata, write_json

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    )
    pipe = build_pipeline(args, device)
    params = sum(p.numel() for p in pipe.denoiser.parameters())
    print(f"device: {device_name}\nMDM {args.model or args.preset}: {params / 1e6:.2f} M parameters, "
          f"{args.frames} frames per clip, guidance 2.5 (batched CFG)\n")  # fmt: skip

    samplers = [("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 50)]
    samplers += [("dpmsolver++", n) for n in args.few_steps if n != 50]
    repeats = 1 if args.quick else 3
    sampling = []
    with torch.inference_mode():
        for name, steps in samplers:
            for batch in args.batch_sizes:
                timed = 50 if (args.quick and steps > 50) else None
                sampling.append(time_sampler(pipe, name, steps, batch, args.frames, repeats, timed, device))
    print(table(sampling, samplers, args.batch_sizes, f"sampler ({'fp32 eager' if device.type == 'cpu' else 'fp32 eager, GPU'})"))

    fast = []
    if device.type == "cuda" and not args.no_fast_sampling:
        fast_samplers = [s for s in samplers if s[0] != "ddpm"]
        with torch.inference_mode():
            fast = time_fast_sampling(pipe, args, fast_samplers, device, repeats)
        for mode in ("bf16 + CUDA graph", "bf16 + torch.compile + CUDA graph"):
            print("\n" + table([r for r in fast if r["mode"] == mode], fast_samplers, args.batch_sizes, f"fast sampling: {mode}"))
        with torch.inference_mode():
            overhead = batch1_overhead(pipe, device, args.frames)
        print("\nbatch 1, DDIM, bf16 + CUDA graph: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in overhead.items()))
        fast.append({"mode": "batch-1 breakdown", **overhead})

    training = []
    if not args.skip_training:
        training = [time_training(args, device, optimised=False), time_training(args, device, optimised=True)]
        base = training[0]["samples_per_s"]
        print(
            f"\n| training loop (batch {training[0]['batch']}, {args.frames} frames) | samples/s | speed-up | warm-up (s) |"
        )
        print("|---|---|---|---|")
        for row in training:
            print(f"| {row['loop']}: {row['features']} | {row['samples_per_s']:.1f} | {row['samples_per_s'] / base:.2f}x "
                  f"| {row['warmup_s']:.1f} |")  # fmt: skip

    result = run_metadata(vars(args), device=device_name, parameters=params, sampling=sampling, fast_sampling=fast,
                          training=training)  # fmt: skip
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
