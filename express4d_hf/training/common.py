"""The one accelerate set-up site of the project, shared by every trainer (evaluator, MDM, VQ-VAE, GPT).

``run_training`` owns the loop: accelerate preparation (bf16 on GPU, the same script on 1 or N processes via
``accelerate launch``), gradient clipping, an optional EMA copy, a progress bar, logged losses (JSON lines, and
TensorBoard when installed), periodic callbacks, safetensors/JSON checkpoints with exact resume, and a
loss-curve PNG. A trainer only supplies the model, the data and a ``loss_fn(model, batch) -> {"loss": ...}``.

Checkpoints are safetensors + JSON only (no pickles): ``<out>/checkpoints/step_<N>/`` holds the model,
EMA and optimizer tensors as safetensors and the optimizer hyper-parameters, step and RNG seeds as JSON.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..core.io import atomic_folder, atomic_path, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """Settings every trainer shares (each model's config adds its own fields)."""

    max_steps: int = 1000  # optimisation steps (one batch each, per process)
    batch_size: int = 32  # clips per batch per process
    learning_rate: float = 2e-4  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10% of the peak
    grad_clip: float = 1.0  # max global grad norm (0 disables clipping)
    ema_decay: float = 0.0  # EMA of the weights (0 disables); the saved model uses the EMA weights
    mixed_precision: str = "auto"  # "auto" = bf16 on GPU, fp32 on CPU; or "no" / "bf16" / "fp16"
    checkpoint_every: int = 500  # steps between resumable checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    log_every: int = 10  # steps between logged loss lines
    num_workers: int = 0  # DataLoader workers
    seed: int = 0  # seeds torch, numpy and the data order


def select_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(out_dir: Path, mixed_precision: str = "auto"):
    """The project's single ``Accelerator`` construction (logs to TensorBoard when it is installed)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    try:
        import tensorboard  # noqa: F401

        log_with = ["tensorboard"]
    except ImportError:
        log_with = None
    return Accelerator(
        mixed_precision=select_mixed_precision(mixed_precision),
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
    )


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cosine_schedule(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short warm-up: early EMA follows the weights
        for ema_t, t in zip(self.shadow.state_dict().values(), model.state_dict().values()):
            if ema_t.dtype.is_floating_point:
                ema_t.lerp_(t.detach().to(ema_t.dtype), 1 - decay)
            else:
                ema_t.copy_(t)


# --- safetensors + JSON checkpoints -----------------------------------------------------------------
def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, model, optimizer, ema: EMA | None, step: int, extra: dict | None = None) -> None:
    """Write a resumable checkpoint atomically (temp folder, then rename)."""
    with atomic_folder(folder) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        if ema is not None:
            save_file({k: v.cpu().contiguous() for k, v in ema.shadow.state_dict().items()}, tmp / "ema.safetensors")
        tensors, meta = _optimizer_to_files(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
        meta.update(step=step, extra=extra or {})
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))
    return ckpts[-1] if ckpts else None


def load_checkpoint(folder: Path, model, optimizer, ema: EMA | None) -> tuple[int, dict]:
    model.load_state_dict(load_file(folder / "model.safetensors"))
    if ema is not None and (folder / "ema.safetensors").exists():
        ema.shadow.load_state_dict(load_file(folder / "ema.safetensors"))
    meta = json.loads((folder / "state.json").read_text())
    _optimizer_from_files(optimizer, load_file(folder / "optimizer.safetensors"), meta)
    return int(meta["step"]), meta.get("extra", {})


# --- losses ------------------------------------------------------------------------------------------
@dataclass
class LossLog:
    """Logged loss values by step; written as JSON lines and drawn as a PNG."""

    path: Path
    records: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.path.exists():  # resume: keep the earlier curve
            self.records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, step: int) -> None:
        """Forget records after ``step`` (a resumed run repeats the steps after its checkpoint)."""
        self.records = [r for r in self.records if r["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def add(self, step: int, values: dict[str, float]) -> None:
        record = {"step": step, **{k: float(v) for k, v in values.items()}}
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self, png: Path, title: str) -> None:
        if not self.records:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # Every logged key, each drawn over the records that carry it: values an on_step callback logs on
        # records of their own (held-out loss, codebook usage) form their own line instead of NaN-broken gaps.
        keys = list(dict.fromkeys(k for r in self.records for k in r if k != "step"))
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for key in keys:
            steps, values = zip(*[(r["step"], r[key]) for r in self.records if key in r])
            sparse = 2 * len(steps) <= len(self.records)
            ax.plot(steps, values, label=key, lw=1.2, marker="o" if sparse else None, ms=3)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if all(r.get(k, 1) > 0 for r in self.records for k in keys):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


class EpochShuffle(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees exactly the same batches."""

    def __init__(self, num_items: int, seed: int):
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items


def infinite_batches(loader, start_epoch: int = 0) -> Iterable[Any]:
    """Loop over a DataLoader forever, setting the epoch of its sampler and dataset (deterministic augmentation)."""
    epoch = start_epoch
    while True:
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):  # accelerate's prepared loader forwards it to the sampler
            loader.set_epoch(epoch)
        for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


@dataclass
class TrainingResult:
    model: torch.nn.Module  # the unwrapped model (EMA weights when EMA is on)
    step: int  # last completed step
    losses: list[dict[str, float]]  # logged records
    seconds: float  # wall time of this run (excluding earlier resumed runs)
    samples_per_s: float  # training throughput of this run


def run_training(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable,
    loss_fn: Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]],
    config: LoopConfig,
    out_dir: str | os.PathLike,
    *,
    name: str = "model",
    parameters: Iterable[torch.nn.Parameter] | None = None,
    on_step: Callable[[int, torch.nn.Module], dict[str, float] | None] | None = None,
    every: int = 0,
    resume: bool = True,
    progress: bool = True,
) -> TrainingResult:
    """Train ``model`` for ``config.max_steps`` with ``loss_fn`` and return it (EMA weights if enabled).

    ``on_step(step, model)`` runs every ``every`` steps on the main process (sample generation, validation,
    codebook statistics); a dict it returns is logged. ``checkpoints/step_<N>`` folders allow resuming.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    accelerator = make_accelerator(out_dir, config.mixed_precision)
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.99),
        fused=torch.cuda.is_available(),
    )  # fmt: skip
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=EpochShuffle(len(dataset), config.seed),
        drop_last=len(dataset) >= config.batch_size, collate_fn=collate_fn, num_workers=config.num_workers,
    )  # fmt: skip
    start_step = 0
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        start_step, _ = load_checkpoint(ckpt, model, optimizer, ema)
        logger.info("%s: resuming from %s (step %d)", name, ckpt, start_step)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if ema is not None:
        ema.shadow.to(accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_schedule(s + start_step, config.warmup_steps, config.max_steps)
    )
    log = LossLog(out_dir / f"{name}_losses.jsonl")
    if accelerator.is_main_process:
        log.truncate(start_step)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers(name)
    steps_per_epoch = max(1, len(loader))
    batches = infinite_batches(loader, start_epoch=start_step // steps_per_epoch)
    for _ in range(start_step % steps_per_epoch):  # resume mid-epoch on the exact batch order
        next(batches)
    bar = tqdm(total=config.max_steps, initial=start_step, desc=f"train {name}", disable=not progress or not accelerator.is_main_process, dynamic_ncols=True)
    running: dict[str, float] = {}
    t0, samples, step = time.perf_counter(), 0, start_step
    model.train()
    for step in range(start_step, config.max_steps):
        batch = next(batches)
        with accelerator.autocast():
            losses = loss_fn(model, batch)
        accelerator.backward(losses["loss"])
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(accelerator.unwrap_model(model), step)
        samples += _batch_size(batch) * accelerator.num_processes
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        done = step + 1
        if done % config.log_every == 0 or done == config.max_steps:
            n = config.log_every if done % config.log_every == 0 else (done % config.log_every)
            means = {k: v / n for k, v in running.items()}
            running = {}
            means["lr"] = scheduler.get_last_lr()[0]
            if accelerator.is_main_process:
                log.add(done, means)
                bar.set_postfix({k: f"{v:.4g}" for k, v in means.items() if k != "lr"})
            accelerator.log(means, step=done)
        if on_step is not None and every and done % every == 0 and accelerator.is_main_process:
            evaluated = ema.shadow if ema is not None else accelerator.unwrap_model(model)
            was_training = evaluated.training
            evaluated.eval()
            extra = on_step(done, evaluated)
            evaluated.train(was_training)
            if extra:
                log.add(done, extra)
                accelerator.log(extra, step=done)
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.max_steps:
            _checkpoint(accelerator, out_dir, model, optimizer, ema, done, config.keep_checkpoints)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _checkpoint(accelerator, out_dir, model, optimizer, ema, config.max_steps, config.keep_checkpoints)
        log.plot(out_dir / f"{name}_loss.png", f"{name} training loss")
    # Not accelerator.end_training(): it destroys the process group, after which a trainer can neither
    # synchronise its processes (wait_for_everyone) nor run a second stage (T2M-GPT's GPT after its VQ-VAE).
    for tracker in accelerator.trackers:
        tracker.finish()
    final = ema.shadow if ema is not None else accelerator.unwrap_model(model)
    final.eval()
    done_steps = max(0, config.max_steps - start_step)
    return TrainingResult(final, config.max_steps, log.records, seconds, samples / seconds if done_steps else 0.0)


def _checkpoint(accelerator, out_dir: Path, model, optimizer, ema, step: int, keep: int) -> None:
    if not accelerator.is_main_process:
        return
    save_checkpoint(out_dir / "checkpoints" / f"step_{step}", accelerator.unwrap_model(model), optimizer, ema, step)
    ckpts = sorted((out_dir / "checkpoints").glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for value in batch.values():
            if torch.is_tensor(value):
                return int(value.shape[0])
            if isinstance(value, list):
                return len(value)
    if torch.is_tensor(batch):
        return int(batch.shape[0])
    return 1


# --- text embedding cache -------------------------------------------------------------------------------
@torch.no_grad()
def embed_caption_set(captions: Iterable[str], tokenizer, text_encoder, batch_size: int = 256, progress: bool = True,
                      with_tokens: bool = False) -> dict[str, Any]:  # fmt: skip
    """Pooled embeddings of a fixed caption set, computed once (the text encoder is frozen during training).

    Returns ``{caption: tensor [D]}`` (float32, CPU); with ``with_tokens`` (order-aware models)
    ``{caption: (pooled [D], token states [L, D])}``, ``L`` the caption's own token count. Trainers include the
    mirrored captions too.
    """
    from tqdm.auto import tqdm

    from ..models.text import encode_prompts

    unique = sorted(set(captions))
    table: dict[str, Any] = {}
    for i in tqdm(range(0, len(unique), batch_size), desc="embed captions", disable=not progress):
        chunk = unique[i : i + batch_size]
        pooled, states, mask = encode_prompts(tokenizer, text_encoder, chunk)
        pooled = pooled.float().cpu()
        if with_tokens:
            states, counts = states.float().cpu(), mask.sum(1).tolist()
            table.update((c, (pooled[j], states[j, : int(counts[j])].clone())) for j, c in enumerate(chunk))
        else:
            table.update(zip(chunk, pooled))
    return table


def run_metadata(config: Any, **extra: Any) -> dict[str, Any]:
    """Seeds, versions and hardware of a run, for the JSON files every trainer and benchmark writes."""
    import accelerate
    import diffusers
    import transformers

    from ..core.constants import __version__

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return {
        "config": asdict(config) if hasattr(config, "__dataclass_fields__") else config,
        "versions": {
            "express4d_hf": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
        },
        "hardware": device,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }  # fmt: skip


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2, default=str) + "\n")


# --- quick quality check after training ------------------------------------------------------------------
