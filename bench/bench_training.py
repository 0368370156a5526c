"""Training speed of every stage of the benchmark, side by side in one run (issue #14).

Per stage (evaluator autoencoder, evaluator contrastive, MDM, VQ-VAE, GPT), on the preset's model and batch:

* ``eager fp32``: the project's loop (``training.common``: batches drawn by index on the device) with no
  mixed precision, no CUDA graph, no compile: the plain loop;
* ``fast``: the loop as ``express4d train`` runs it by default (bf16 autocast, fused capturable AdamW, the
  whole step replayed as one CUDA graph where the stage's step is graph-safe);
* ``compiled`` (on request): the fast loop with the model ``torch.compile``d (``express4d train ... --compile``);
* ``limit``: the bare step of the same model, ``torch.compile``d and replayed as a CUDA graph, on one fixed
  random batch (no data drawing, no per-step host work): what the hardware allows at this size;

with the GPU busy share while the fast loop runs alone (``nvidia-smi`` sampled every 100 ms), and the full
schedule extrapolated from the fast loop's step time. ``--device cpu --smoke`` runs the tiny presets for a few
steps (under three minutes on a 2-core CPU; CI runs it): only the eager and fast columns (on a CPU the fast
loop is the eager loop, without graph or bf16).

``--together VARIANT`` then runs the stages at once, one process each (as ``express4d benchmark`` trains them on
one GPU), each timing VARIANT for the same wall-clock window after all have warmed up, and reports each stage's
step time together against alone and the *overlap*: the sum of (alone / together) rates, 1.0 when the processes
only take turns (time slicing), up to the number of stages when they overlap perfectly. ``--mps`` runs that
under CUDA MPS (a private ``nvidia-cuda-mps-control`` daemon), which lets kernels of different processes share
the GPU's multiprocessors at the same time instead of taking turns.

    python bench/bench_training.py --device cpu --smoke
    python bench/bench_training.py --preset paper --json out/bench_training.json     # one GPU
    python bench/bench_training.py --preset paper --stages mdm,vqvae,gpt --variants compiled --together compiled --mps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from express4d_hf.training.gpu_sharing import MPSDaemon, mps_unavailable_reason  # noqa: E402

STAGES = ("movement", "contrastive", "mdm", "vqvae", "gpt")
# The order-aware variants (#20): the same trainers with the ``<preset>_order`` model presets, whose steps also
# read each caption's token states (timed against the pooled stages, e.g. ``--stages mdm,mdm_order,gpt,gpt_order``).
ORDER_STAGES = ("mdm_order", "gpt_order")


def random_caption_table(num_captions: int, text_dim: int = 384, tokens: bool = False, seed: int = 0):
    """Random text of ``num_captions`` captions (the step's cost does not depend on the values): pooled vectors
    only, or with token states of 10-32 tokens each (all-MiniLM-L6-v2 spends ~12-30 on the corpus's captions)."""
    from express4d_hf.training.mdm import CaptionTable

    gen = torch.Generator().manual_seed(seed)
    pooled = torch.randn(num_captions, text_dim, generator=gen)
    if not tokens:
        return CaptionTable(dict(enumerate(pooled)))
    counts = torch.randint(10, 33, (num_captions,), generator=gen).tolist()
    return CaptionTable({i: (pooled[i], torch.randn(n, text_dim, generator=gen)) for i, n in enumerate(counts)})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BusySampler:
    """GPU utilisation (%) sampled by ``nvidia-smi`` every 100 ms while the ``with`` block runs."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.proc = device, [], None

    def __enter__(self):
        if self.device.type != "cuda":
            return self
        index = self.device.index or 0
        try:
            self.proc = subprocess.Popen(["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "100"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        except OSError:
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
        return False

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples[2:] or self.samples) if self.samples else None


def build_stage(name: str, preset: str, data, device: torch.device) -> dict[str, Any]:
    """Model, loss, batch factory, loop config and graph-safety of one stage, as its trainer builds them."""
    from express4d_hf.data.hub import dataset_stats, load_express4d
    from express4d_hf.data.torch import MotionDataset
    from express4d_hf.training.batches import CaptionVocabulary, MotionBatches

    splits = load_express4d(data, progress=False)
    stats = dataset_stats(data)
    torch.manual_seed(0)
    if name in ("movement", "contrastive"):
        from express4d_hf.models.evaluator import TextMotionEvaluator
        from express4d_hf.training.evaluator import (EvaluatorTrainConfig, MovementAutoencoder, TextMotionPair,
                                                     contrastive_batches, contrastive_index_loss_fn, movement_loss_fn)  # fmt: skip

        config = EvaluatorTrainConfig.preset(preset)
        train_set = MotionDataset(splits["train"], stats, train=True, max_leading_offset=config.max_leading_offset,
                                  mirror_prob=config.mirror_prob)  # fmt: skip
        vocabulary = CaptionVocabulary(train_set.captions)
        evaluator = TextMotionEvaluator.from_text_encoder(config.model_preset, config.text_encoder, stats=stats)
        if name == "movement":
            return dict(model=MovementAutoencoder(evaluator), loss=movement_loss_fn(config), loop=config.stage_loop("movement"),
                        batches=lambda **kw: MotionBatches(train_set, vocabulary=vocabulary, **kw), graph_safe=True,
                        schedule=config.movement_steps)  # fmt: skip
        return dict(model=TextMotionPair(evaluator), loss=contrastive_index_loss_fn(evaluator, config, vocabulary),
                    loop=config.stage_loop("contrastive"), batches=contrastive_batches(train_set, config, vocabulary),
                    graph_safe=True, schedule=config.max_steps)  # fmt: skip
    order = name in ORDER_STAGES
    model_preset = {"model_preset": f"{preset}_order"} if order else {}
    if name in ("mdm", "mdm_order"):
        from express4d_hf.training.mdm import MDMBatches, MDMTrainConfig, mdm_loss_fn

        config = MDMTrainConfig.preset(preset, **model_preset)
        train_set = MotionDataset(splits["train"], stats, train=True, max_leading_offset=config.max_leading_offset,
                                  mirror_prob=config.mirror_prob)  # fmt: skip
        vocabulary = CaptionVocabulary(train_set.captions)
        table = random_caption_table(len(vocabulary), tokens=order)
        return dict(model=config.build_denoiser(384), loss=mdm_loss_fn(config, table), loop=config.loop_config(),
                    batches=MDMBatches(train_set, replace(config, trim_padding=device.type == "cpu"), vocabulary),
                    graph_safe=True, schedule=config.max_steps)  # fmt: skip
    from express4d_hf.training.t2m_gpt import GPTTrainConfig, TokenizedSplit, VQVAETrainConfig, gpt_loss_fn, vqvae_loss_fn

    if name == "vqvae":
        config = VQVAETrainConfig.preset(preset)
        train_set = MotionDataset(splits["train"], stats, train=True, max_leading_offset=config.max_leading_offset,
                                  mirror_prob=config.mirror_prob)  # fmt: skip
        return dict(model=config.build_model(), loss=vqvae_loss_fn, loop=config.loop_config(),
                    batches=lambda **kw: MotionBatches(train_set, window=config.window_frames, **kw), graph_safe=True,
                    schedule=config.max_steps)  # fmt: skip
    from express4d_hf.models.t2m_gpt import MIN_CODES
    from express4d_hf.training.batches import CodeBatches

    config = GPTTrainConfig.preset(preset, **model_preset)
    vq = VQVAETrainConfig.preset(preset).build_model()
    train_set = MotionDataset(splits["train"], stats, train=False)
    lengths = torch.as_tensor(train_set.lengths // 4).clamp(min=MIN_CODES)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, vq.config.num_codes, (len(lengths), 49), generator=gen)
    tokens = TokenizedSplit(codes, codes.flip(1), lengths, [list(c) for c in train_set.captions])
    vocabulary = CaptionVocabulary(tokens.captions)
    gpt = config.build_model(vq.config.num_codes, 384)
    table = random_caption_table(len(vocabulary), tokens=order)
    return dict(model=gpt, loss=gpt_loss_fn(table, config.corruption_prob), loop=config.loop_config(),
                batches=lambda **kw: CodeBatches(tokens, gpt.pad_token_id, mirror_prob=config.mirror_prob,
                                                 token_drop_prob=config.token_drop_prob, min_codes=MIN_CODES,
                                                 vocabulary=vocabulary, **kw),
                graph_safe=True, schedule=config.max_steps)  # fmt: skip


class _Fixed:
    """A batch source that returns one fixed batch (the ``limit`` column: no data drawing)."""

    def __init__(self, batch):
        self.fixed = batch

    def batch(self, step):
        return self.fixed


def time_variant(stage: dict[str, Any], variant: str, device: torch.device, seconds: float, min_steps: int,
                 start: Any = None) -> dict[str, Any]:  # fmt: skip
    """Milliseconds per step of the loop's step in ``variant`` (``eager``, ``fast``, ``compiled`` or ``limit``).

    ``start``: called after the warm-up; the timed loop then runs for ``seconds`` of wall-clock time (at least
    ``min_steps``) instead of a step count, so processes started together time the same window (``--together``)."""
    import copy

    from express4d_hf.training.common import EMA, _TrainStep, cosine_schedule, make_optimizer, step_seed

    loop = stage["loop"]
    cuda = device.type == "cuda"
    if variant == "eager":
        loop = replace(loop, mixed_precision="no", cuda_graph=False, compile=False)
    elif variant == "fast":
        loop = replace(loop, mixed_precision=None, compile=False)
    elif variant == "compiled":  # the fast loop with `--compile` (what `express4d train ... --compile` runs)
        loop = replace(loop, mixed_precision=None, compile=True)
    else:
        loop = replace(loop, mixed_precision=None, compile=True, cuda_graph=True)
    from express4d_hf.training.common import resolve_mixed_precision

    precision = resolve_mixed_precision(loop.mixed_precision)[0]
    model = copy.deepcopy(stage["model"]).to(device).train()
    source = stage["batches"](batch_size=loop.batch_size, seed=0, rank=0, world=1, device=device)
    graph = bool(loop.cuda_graph and stage["graph_safe"] and cuda)
    if variant == "limit":
        source = _Fixed(source.batch(0))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, loop, device, capturable=graph)
    ema = EMA(model, loop.ema_decay) if loop.ema_decay > 0 else None
    if ema is not None:
        ema.shadow.to(device)
    stepped = torch.compile(model, dynamic=False) if loop.compile else model
    runner = _TrainStep(stepped, model, optimizer, params, stage["loss"], loop, ema, precision, device, False, graph, None)
    running: dict[str, torch.Tensor] = {}

    def one(step: int) -> None:
        torch.manual_seed(step_seed(0, step, 0, 2))
        lr = loop.learning_rate * cosine_schedule(step, loop.warmup_steps, loop.max_steps)
        for k, v in runner(step, source.batch(step), lr).items():
            running[k] = running[k] + v if k in running else v.clone()

    t0 = time.perf_counter()
    for step in range(5):  # warm-up: graph capture / compilation
        one(step)
    sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe = 5
    for step in range(5, 5 + probe):
        one(step)
    sync(device)
    per = (time.perf_counter() - t0) / probe
    steps = max(min_steps, int(seconds / max(per, 1e-4)))
    if start is not None:
        start()
    with BusySampler(device) as busy:
        sync(device)
        t0 = time.perf_counter()
        if start is None:
            for step in range(10, 10 + steps):
                one(step)
        else:  # a wall-clock window (checked every 5 steps, without synchronising)
            steps = 0
            while steps < min_steps or time.perf_counter() - t0 < seconds:
                for _ in range(5):
                    one(10 + steps)
                    steps += 1
        sync(device)
        elapsed = time.perf_counter() - t0
    loss = float(running["loss"]) / (steps + 10) if "loss" in running else None
    ms = 1000 * elapsed / steps
    return {"ms_per_step": round(ms, 3), "samples_per_s": round(loop.batch_size / (ms / 1000), 1), "steps_timed": steps,
            "warmup_s": round(warm, 1), "gpu_busy_pct": busy.median, "mixed_precision": precision, "cuda_graph": graph,
            "compile": loop.compile, "mean_loss": loss}  # fmt: skip


def order_over_pooled(rows: dict[str, dict[str, Any]], variants: list[str]) -> dict[str, dict[str, float]]:
    """Step time of each order-aware stage over its pooled stage, per variant timed for both (#20's 1.3x)."""
    ratios: dict[str, dict[str, float]] = {}
    for order in ORDER_STAGES:
        pooled = order.removesuffix("_order")
        for variant in variants:
            ms = [rows.get(stage, {}).get(variant, {}).get("ms_per_step") for stage in (order, pooled)]
            if all(ms):
                ratios.setdefault(pooled, {})[variant] = round(ms[0] / ms[1], 3)
    return ratios


class _Barrier:
    """Start line for processes in a folder: each writes ``<name>.ready`` and waits for ``go``."""

    def __init__(self, folder: str, name: str):
        self.folder, self.name = Path(folder), name

    def __call__(self) -> None:
        (self.folder / f"{self.name}.ready").touch()
        deadline = time.time() + 1800
        while not (self.folder / "go").exists():
            if time.time() > deadline:
                raise TimeoutError(f"{self.folder}: no start signal after 30 min")
            time.sleep(0.05)


def run_together(stages: list[str], variant: str, args, alone: dict[str, Any], mps: bool) -> dict[str, Any]:
    """Every stage at once, one process each, timing ``variant`` in the same wall-clock window; with the alone
    figures of this run, each stage's slowdown and the overlap (sum of alone/together step-time ratios)."""
    import contextlib
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_together_") as tmp, \
            (MPSDaemon(Path(tmp)) if mps else contextlib.nullcontext()) as daemon:  # fmt: skip
        folder = Path(tmp)
        env = {**os.environ, **(daemon.env if daemon is not None else {})}
        procs: dict[str, subprocess.Popen] = {}

        def failure(stage: str) -> str:  # the child's stderr goes to a file: a pipe left unread can fill and block it
            return (folder / f"{stage}.err").read_text()[-2000:]

        try:
            for stage in stages:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--preset", args.preset_resolved,
                       "--stages", stage, "--variants", variant, "--seconds", str(args.seconds), "--json", str(folder / f"{stage}.json"),
                       "--barrier", str(folder)] + (["--data", args.data] if args.data else []) + (["--smoke"] if args.smoke else [])  # fmt: skip
                with open(folder / f"{stage}.err", "w") as err:
                    procs[stage] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
            while not all((folder / f"{stage}.ready").exists() for stage in stages):
                failed = [stage for stage, proc in procs.items() if proc.poll() not in (None, 0)]
                if failed:
                    raise RuntimeError(f"--together: stage {failed[0]} failed before the start: {failure(failed[0])}")
                time.sleep(0.1)
            (folder / "go").touch()
            for stage, proc in procs.items():
                if proc.wait() != 0:
                    raise RuntimeError(f"--together: stage {stage} failed: {failure(stage)}")
            rows = {stage: json.loads((folder / f"{stage}.json").read_text())["stages"][stage][variant] for stage in stages}
        finally:
            for proc in procs.values():  # after a failure the others would wait at the start line
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    result: dict[str, Any] = {"variant": variant, "mps": mps, "stages": {}}
    overlap = 0.0
    for stage in stages:
        together = rows[stage]["ms_per_step"]
        by_itself = alone.get(stage, {}).get(variant, {}).get("ms_per_step")
        result["stages"][stage] = {"alone_ms": by_itself, "together_ms": together, "gpu_busy_pct": rows[stage].get("gpu_busy_pct"),
                                   "slowdown": round(together / by_itself, 2) if by_itself else None}  # fmt: skip
        overlap += by_itself / together if by_itself else 0.0
    result["overlap"] = round(overlap, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=["tiny", "paper"], default=None, help="default: paper on a GPU, tiny on a CPU")
    parser.add_argument("--data", default=None, help="dataset (default: the embedded procedural corpus)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES + ORDER_STAGES)} (default: the first five)")
    parser.add_argument("--variants", default=None, help="comma-separated subset of eager,fast,compiled,limit (compiled = the fast loop with --compile; "
                        "default: eager,fast,limit on a GPU, eager,fast on a CPU)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per variant (default 3)")
    parser.add_argument("--smoke", action="store_true", help="a few steps per variant (CI)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--together", default=None, metavar="VARIANT",
                        help="then run the stages at once, one process each, timing VARIANT (one of --variants) in one window")  # fmt: skip
    parser.add_argument("--mps", action="store_true", help="with --together on a GPU: under a private CUDA MPS daemon")
    parser.add_argument("--barrier", default=None, help=argparse.SUPPRESS)  # internal: the start line of --together
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    preset = args.preset or ("paper" if device.type == "cuda" else "tiny")
    args.preset_resolved = preset
    variants = (args.variants or ("eager,fast,limit" if device.type == "cuda" else "eager,fast")).split(",")
    seconds, min_steps = (0.0, 3) if args.smoke else (args.seconds, 20)
    if device.type == "cpu":
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    results: dict[str, Any] = {"device": name, "preset": preset, "torch": torch.__version__, "stages": {}}
    stages = args.stages.split(",")
    unknown = set(stages) - set(STAGES + ORDER_STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {','.join(STAGES + ORDER_STAGES)}")
    if args.together and args.together not in variants:
        parser.error(f"--together {args.together}: time it alone too (add it to --variants)")
    if args.mps and (device.type != "cuda" or not args.together):
        parser.error("--mps goes with --together on a GPU")
    if args.mps and (reason := mps_unavailable_reason()):
        parser.error(f"--mps: {reason}")
    print(f"# training speed, {preset} preset, {name}")
    for stage_name in stages:
        stage = build_stage(stage_name, preset, args.data, device)
        row: dict[str, Any] = {"batch_size": stage["loop"].batch_size, "schedule_steps": stage["schedule"]}
        for variant in variants:
            try:
                start = _Barrier(args.barrier, stage_name) if args.barrier else None
                row[variant] = time_variant(stage, variant, device, seconds, min_steps, start)
            except Exception as err:  # noqa: BLE001 - a variant that fails is reported, the others still run
                row[variant] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            torch._dynamo.reset()
            print(f"{stage_name:>12} {variant:>6}: {json.dumps(row[variant])}", flush=True)
        limit = row.get("limit", {}).get("ms_per_step")
        for variant, suffix in (("fast", ""), ("compiled", "_compiled")):  # the default loop, and with --compile
            ms = row.get(variant, {}).get("ms_per_step")
            if ms:
                row[f"full_schedule_min{suffix}"] = round(stage["schedule"] * ms / 60000, 2)
            if ms and limit:
                row[f"{variant}_over_limit"] = round(ms / limit, 2)
        results["stages"][stage_name] = row
        del stage
        if device.type == "cuda":
            torch.cuda.empty_cache()
    titles = {"eager": "eager fp32 ms", "fast": "fast ms", "compiled": "fast+compile ms", "limit": "limit ms"}
    shown = [v for v in titles if v in variants]
    print("\n| stage | batch | " + " | ".join(titles[v] for v in shown) + " | fast/limit | fast+compile/limit | "
          "GPU busy (fast, fast+compile) | full schedule (fast, fast+compile) |")  # fmt: skip
    print("|---|---|" + "---|" * len(shown) + "---|---|---|---|")
    for stage_name, row in results["stages"].items():
        cells = [str(row.get(v, {}).get("ms_per_step", row.get(v, {}).get("error", "–"))) for v in shown]
        busy = ", ".join(str(row.get(v, {}).get("gpu_busy_pct", "–")) for v in ("fast", "compiled"))
        print(f"| {stage_name} | {row['batch_size']} | " + " | ".join(cells) + f" | {row.get('fast_over_limit', '–')} | "
              f"{row.get('compiled_over_limit', '–')} | {busy} | {row.get('full_schedule_min', '–')}, "
              f"{row.get('full_schedule_min_compiled', '–')} min ({row['schedule_steps']} steps) |")  # fmt: skip
    ratios = order_over_pooled(results["stages"], variants)
    if ratios:
        results["order_over_pooled"] = ratios
        print("\norder-aware / pooled step time: " + "; ".join(f"{stage} {variant} {ratio}x" for stage, by in ratios.items() for variant, ratio in by.items()))
    if args.together:
        together = run_together(stages, args.together, args, results["stages"], args.mps)
        results["together"] = together
        print(f"\n{len(stages)} stages at once ({args.together}{', MPS' if args.mps else ''}): overlap {together['overlap']}x "
              f"(1.0 = taking turns, {len(stages)} = perfect)")  # fmt: skip
        for stage, row in together["stages"].items():
            print(f"  {stage:>12}: {row['alone_ms']} ms alone, {row['together_ms']} ms together ({row['slowdown']}x), "
                  f"GPU busy {row['gpu_busy_pct']}")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
