"""Benchmark the T2M-GPT baseline next to MDM: sampling time per clip (AITS) and training throughput.

AITS (average inference time per sample, seconds per generated clip, text encoding and VQ decoding
included) of T2M-GPT (batched autoregressive sampling with the key-value cache) and of the MDM pipeline
with 50 DDIM steps and guidance 2.5, at batch 64 and batch 1, in the same run on the same device. Clips
are ``--frames`` long (196 by default, the longest clip: T2M-GPT then writes all 49 codes, its upper
bound; the end token is suppressed until then, as for any forced length).

Training throughput (samples/s) of both T2M-GPT stages with the trainers' own losses
(``training.t2m_gpt.vqvae_loss_fn`` on 64-frame windows, ``gpt_loss_fn`` on random code sequences with
corruption) and the loop settings of ``run_training``: bf16 autocast and fused AdamW on GPU, fp32 on CPU.

    python bench/bench_t2m_gpt.py --preset tiny --quick            # CPU, a few minutes
    python bench/bench_t2m_gpt.py --preset paper --json t2m.json   # GPU

The weights are random unless ``--pipeline DIR`` (T2M-GPT) / ``--mdm DIR`` are given: with a forced
length the timing does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_mdm: the MDM side of the comparison
from bench_mdm import sync, time_steps  # noqa: E402  (shared timing helpers)


def build_t2m_gpt(args: argparse.Namespace, device: torch.device, text_encoder=None):
    from express4d_hf.models.t2m_gpt import T2MGPT, MotionVQVAE
    from express4d_hf.pipelines.t2m_gpt import Express4DT2MGPTPipeline

    if args.pipeline:
        from express4d_hf.pipelines.loading import load_pipeline

        pipe = load_pipeline(args.pipeline)
    else:
        torch.manual_seed(0)
        vqvae = MotionVQVAE.from_preset(args.preset)
        vqvae.train()(torch.randn(8, 256, 61))  # fill the codebook from encoder outputs, as training starts
        gpt = T2MGPT.from_preset(args.preset, num_codes=vqvae.config.num_codes)
        tokenizer, encoder = text_encoder if text_encoder is not None else (None, None)
        pipe = Express4DT2MGPTPipeline.from_components(vqvae, gpt, text_encoder=encoder, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def time_t2m_gpt(pipe, batch: int, frames: int, repeats: int, device: torch.device) -> dict[str, Any]:
    prompts = [f"A person is smiling and then blinking {i}" for i in range(batch)]
    pipe(prompts[:1], num_frames=frames, generator=torch.Generator().manual_seed(0))  # warm-up
    times = []
    for r in range(repeats):
        sync(device)
        start = time.perf_counter()
        pipe(prompts, num_frames=frames, generator=torch.Generator().manual_seed(r))
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"model": "T2M-GPT", "sampler": "autoregressive, KV cache", "steps": frames // pipe.frames_per_code + (frames % pipe.frames_per_code > 0),
            "batch": batch, "seconds_per_batch": seconds, "aits_s": seconds / batch}  # fmt: skip


def time_mdm(args: argparse.Namespace, batch: int, repeats: int, device: torch.device) -> dict[str, Any] | None:
    try:
        import bench_mdm
    except ImportError as err:  # pragma: no cover - the MDM bench ships next to this file
        print(f"(MDM skipped: {err})")
        return None
    mdm_args = argparse.Namespace(model=args.mdm, preset=args.preset)
    if "pipe" not in _MDM:
        _MDM["pipe"] = bench_mdm.build_pipeline(mdm_args, device)
    row = bench_mdm.time_sampler(_MDM["pipe"], "ddim", 50, batch, args.frames, repeats, None, device)
    return {"model": "MDM", "sampler": "DDIM, guidance 2.5", **{k: row[k] for k in ("steps", "batch", "seconds_per_batch", "aits_s")}}


_MDM: dict[str, Any] = {}


def _optimizer(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), fused=device.type == "cuda")


def time_training(args: argparse.Namespace, device: torch.device, text_dim: int) -> list[dict[str, Any]]:
    """Samples/s of both stages' losses on synthetic batches, with run_training's precision settings."""
    from express4d_hf.core.constants import MAX_FRAMES
    from express4d_hf.training.mdm import CaptionTable
    from express4d_hf.training.t2m_gpt import GPTTrainConfig, VQVAETrainConfig, gpt_loss_fn, vqvae_loss_fn

    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    warmup, steps = (2, 5) if args.quick else (5, 30)
    gen = torch.Generator().manual_seed(0)
    rows = []

    vq_config = VQVAETrainConfig.preset(args.preset)
    torch.manual_seed(0)
    vqvae = vq_config.build_model().to(device).train()
    window = vq_config.window_frames
    batch = {"motion": torch.randn(vq_config.batch_size, window, 61, generator=gen).to(device),
             "mask": torch.ones(vq_config.batch_size, window, dtype=torch.bool, device=device)}  # fmt: skip
    optimizer = _optimizer(vqvae, vq_config.learning_rate, device)

    def vq_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = vqvae_loss_fn(vqvae, batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vqvae.parameters(), vq_config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warm, seconds = time_steps(vq_step, warmup, steps, device)
    rows.append({"stage": "1: VQ-VAE", "batch": f"{vq_config.batch_size} x {window} frames", "precision": "bf16" if bf16 else "fp32",
                 "warmup_s": warm, "samples_per_s": vq_config.batch_size * steps / seconds})  # fmt: skip

    gpt_config = GPTTrainConfig.preset(args.preset)
    gpt = gpt_config.build_model(vqvae.config.num_codes, text_dim).to(device).train()
    size, max_codes = gpt_config.batch_size, MAX_FRAMES // vqvae.downsample
    lengths = torch.randint(5, max_codes + 1, (size,), generator=gen)
    codes = torch.randint(0, vqvae.config.num_codes, (size, max_codes), generator=gen)
    captions = [f"caption {i}" for i in range(size)]
    table = CaptionTable({c: torch.randn(text_dim, generator=gen) for c in captions})
    gpt_batch = {"codes": codes.to(device), "lengths": lengths.to(device), "captions": captions}
    loss_fn = gpt_loss_fn(table, gpt_config.corruption_prob)
    optimizer = _optimizer(gpt, gpt_config.learning_rate, device)

    def gpt_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(gpt, gpt_batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), gpt_config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warm, seconds = time_steps(gpt_step, warmup, steps, device)
    rows.append({"stage": "2: GPT", "batch": f"{size} sequences of <= {max_codes} codes", "precision": "bf16" if bf16 else "fp32",
                 "warmup_s": warm, "samples_per_s": size * steps / seconds})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="model sizes of both baselines (default tiny)")
    parser.add_argument("--pipeline", default=None, metavar="DIR", help="time a trained T2M-GPT pipeline folder")
    parser.add_argument("--mdm", default=None, metavar="DIR", help="time a trained MDM pipeline folder")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and training steps (CPU)")
    parser.add_argument("--frames", type=int, default=196, help="frames per clip at 20 fps (default 196)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1], help="sampling batch sizes (default 64 1)")
    parser.add_argument("--skip-mdm", action="store_true", help="time T2M-GPT only")
    parser.add_argument("--skip-training", action="store_true", help="only time sampling")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from express4d_hf.models.text import load_text_encoder, text_hidden_size
    from express4d_hf.training.common import run_metadata, write_json

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")  # fmt: skip
    text_encoder = load_text_encoder()
    pipe = build_t2m_gpt(args, device, text_encoder)
    params = {"vqvae": sum(p.numel() for p in pipe.vqvae.parameters()), "gpt": sum(p.numel() for p in pipe.transformer.parameters())}
    print(f"device: {device_name}\nT2M-GPT {args.pipeline or args.preset}: VQ-VAE {params['vqvae'] / 1e6:.2f} M + GPT "
          f"{params['gpt'] / 1e6:.2f} M parameters; {args.frames} frames per clip\n")  # fmt: skip

    repeats = 1 if args.quick else 3
    sampling = []
    with torch.inference_mode():
        for batch in args.batch_sizes:
            sampling.append(time_t2m_gpt(pipe, batch, args.frames, repeats if batch > 1 else 2 * repeats + 1, device))
            if not args.skip_mdm:
                row = time_mdm(args, batch, repeats if batch > 1 else 2 * repeats + 1, device)
                if row is not None:
                    sampling.append(row)
    models = list(dict.fromkeys((r["model"], r["sampler"], r["steps"]) for r in sampling))
    lines = ["| model | sampler | steps | " + " | ".join(f"AITS batch {b} (s/clip)" for b in args.batch_sizes) + " |",
             "|" + "---|" * (3 + len(args.batch_sizes))]  # fmt: skip
    for model, sampler, steps in models:
        cells = [f"{next(r['aits_s'] for r in sampling if r['model'] == model and r['batch'] == b):.4f}" for b in args.batch_sizes]
        lines.append(f"| {model} | {sampler} | {steps} | " + " | ".join(cells) + " |")
    print("\n".join(lines))

    training = []
    if not args.skip_training:
        training = time_training(args, device, text_hidden_size(text_encoder[1]))
        print("\n| T2M-GPT training stage | batch | precision | samples/s | warm-up (s) |\n|---|---|---|---|---|")
        for row in training:
            print(f"| {row['stage']} | {row['batch']} | {row['precision']} | {row['samples_per_s']:.1f} | {row['warmup_s']:.1f} |")

    result = run_metadata(vars(args), device=device_name, parameters=params, sampling=sampling, training=training)
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
