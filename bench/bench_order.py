"""Cost of the order-aware variants against the pooled ones: training step time and sampling time per clip.

Both variants of a baseline are built at the same size with random weights (the cost does not depend on them)
and timed interleaved (pooled, order, pooled, order, ...) in one process, so a shared or busy machine slows both
alike; the medians are compared.

* MDM: one training step (forward + backward + AdamW, batch 32 of real-length clips, the trainer's x0 MSE) and
  sampling (50 DDIM steps, guidance 2.5, 8 prompts of 120 frames, text encoding included).
* T2M-GPT: one GPT training step (teacher forcing, batch 32 of 49 codes) and sampling 8 clips of 120 frames
  (30 codes, key-value cache, VQ decoding included).
* On a GPU also MDM sampling on its default fast path (``enable_fast_sampling``: bf16, the whole loop replayed as
  a CUDA graph). The training steps here are the plain eager fp32 step; ``bench/bench_training.py --stages
  mdm,mdm_order,gpt,gpt_order --variants compiled`` times the trainers' own (compiled, graphed) steps.

    python bench/bench_order.py --preset tiny --json order_cost.json     # CPU, a few minutes
    python bench/bench_order.py --preset paper                           # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

PROMPTS = ["A person first smiles broadly and then frowns deeply", "A person is blinking twice",
           "A person is squinting briefly and then opening their eyes wide", "A person is nodding slowly",
           "A person is puffing their cheeks, then turning their head to the right", "A person is pouting",
           "A person is raising their eyebrows while opening their mouth, then smiling", "A person is sneering"]  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timings per variant")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the tiny trainers use 1)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    from express4d_hf.models.mdm import MDMDenoiser
    from express4d_hf.models.t2m_gpt import T2MGPT, MotionVQVAE
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline, make_scheduler
    from express4d_hf.pipelines.t2m_gpt import Express4DT2MGPTPipeline
    from express4d_hf.models.text import encode_prompts, load_text_encoder
    from express4d_hf.training.mdm import masked_mse

    tokenizer, encoder = load_text_encoder(device=device)
    captions = [PROMPTS[i % len(PROMPTS)] for i in range(32)]
    enc = encode_prompts(tokenizer, encoder, captions)
    pooled, states, mask = (t.to(device) for t in enc)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(40, 197, (32,), generator=gen)
    frames = int(lengths.max())
    frame_mask = (torch.arange(frames)[None] < lengths[:, None]).to(device)
    x0 = torch.randn(32, frames, 61, generator=gen).to(device)
    codes = torch.randint(0, 512, (32, 49), generator=gen).to(device)
    code_lengths = torch.randint(10, 50, (32,), generator=gen).to(device)
    results: dict[str, dict[str, list[float]]] = {}

    def add(name: str, variant: str, value: float) -> None:
        results.setdefault(name, {}).setdefault(variant, []).append(value)

    models = {}
    for variant, suffix in (("pooled", ""), ("order", "_order")):
        torch.manual_seed(0)
        mdm = MDMDenoiser.from_preset(args.preset + suffix).to(device)
        vq = MotionVQVAE.from_preset(args.preset)
        gpt = T2MGPT.from_preset(args.preset + suffix, num_codes=vq.config.num_codes).to(device)
        mdm_pipe = Express4DMDMPipeline.from_components(mdm, text_encoder=encoder, tokenizer=tokenizer).to(device)
        mdm_pipe.scheduler = make_scheduler("ddim", mdm_pipe.scheduler.config)
        mdm_pipe.set_progress_bar_config(disable=True)
        gpt_pipe = Express4DT2MGPTPipeline.from_components(vq, gpt, text_encoder=encoder, tokenizer=tokenizer).to(device)
        gpt_pipe.set_progress_bar_config(disable=True)
        fast_pipe = None
        if device.type == "cuda":  # the GPU's default sampling path: bf16 denoiser, the loop replayed as a CUDA graph
            import copy

            fast_pipe = Express4DMDMPipeline.from_components(copy.deepcopy(mdm), text_encoder=encoder, tokenizer=tokenizer).to(device)
            fast_pipe.scheduler = make_scheduler("ddim", fast_pipe.scheduler.config)
            fast_pipe.set_progress_bar_config(disable=True)
            fast_pipe.enable_fast_sampling()
        models[variant] = dict(mdm=mdm, gpt=gpt, mdm_fast_pipe=fast_pipe, mdm_opt=torch.optim.AdamW(mdm.parameters(), 1e-4),
                               gpt_opt=torch.optim.AdamW(gpt.parameters(), 1e-4), mdm_pipe=mdm_pipe, gpt_pipe=gpt_pipe)  # fmt: skip

    def mdm_step(m) -> None:
        model, opt = m["mdm"], m["mdm_opt"]
        model.train()
        extra = dict(encoder_token_states=states, encoder_attention_mask=mask) if model.uses_text_tokens else {}
        t = torch.randint(0, 1000, (32,), device=device)
        loss = masked_mse(model(x0, t, pooled, frame_mask=frame_mask, **extra), x0, frame_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def gpt_step(m) -> None:
        model, opt = m["gpt"], m["gpt_opt"]
        model.train()
        extra = dict(text_token_states=states, text_mask=mask) if model.uses_text_tokens else {}
        loss = model.compute_loss(codes.clamp_max(model.config.num_codes - 1), code_lengths, pooled, 0.1, **extra).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    def mdm_sample(m, pipe: str = "mdm_pipe") -> None:
        m[pipe](PROMPTS, num_frames=120, num_inference_steps=50, guidance_scale=2.5, generator=torch.Generator().manual_seed(0))

    def gpt_sample(m) -> None:
        m["gpt_pipe"](PROMPTS, num_frames=120, generator=torch.Generator().manual_seed(0))

    for m in models.values():  # warm-up
        mdm_step(m), gpt_step(m), mdm_sample(m), gpt_sample(m)
        if m["mdm_fast_pipe"] is not None:
            mdm_sample(m, "mdm_fast_pipe")
    for _ in range(args.repeats):
        for variant, m in models.items():
            add("mdm_train_step_s", variant, timed(lambda: mdm_step(m), device))
            add("gpt_train_step_s", variant, timed(lambda: gpt_step(m), device))
            add("mdm_sample_s_per_clip", variant, timed(lambda: mdm_sample(m), device) / len(PROMPTS))
            add("gpt_sample_s_per_clip", variant, timed(lambda: gpt_sample(m), device) / len(PROMPTS))
            if m["mdm_fast_pipe"] is not None:
                add("mdm_sample_graph_s_per_clip", variant, timed(lambda: mdm_sample(m, "mdm_fast_pipe"), device) / len(PROMPTS))
    summary = {}
    for name, by_variant in results.items():
        pooled_s, order_s = statistics.median(by_variant["pooled"]), statistics.median(by_variant["order"])
        summary[name] = {"pooled": pooled_s, "order": order_s, "ratio": order_s / pooled_s}
        print(f"{name:24s} pooled {pooled_s:.4f}  order-aware {order_s:.4f}  ratio {order_s / pooled_s:.2f}x")
    params = {v: {k: sum(p.numel() for p in m[k].parameters()) for k in ("mdm", "gpt")} for v, m in models.items()}
    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {args.threads} thread(s))"
    report = {"preset": args.preset, "device": device_name, "repeats": args.repeats, "median_s": summary, "parameters": params,
              "raw_s": results, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
