"""The ONE training loop of the project, shared by every trainer (evaluator, MDM, VQ-VAE, GPT).

``run_training`` owns the loop; a trainer supplies the model, its batches and a ``loss_fn(model, batch) ->
{"loss": ...}``. One design covers the settings, the data, the step, the checkpoints and several processes:

* **Settings.** Mixed precision by one precedence rule (:func:`resolve_mixed_precision`): an explicit setting,
  then accelerate's (``accelerate launch --mixed_precision``, ``ACCELERATE_MIXED_PRECISION``, ``accelerate
  config``), then the preset default (bf16 on a GPU, none on a CPU). Gradient accumulation splits each batch
  into micro-batches: the recipe stays the same.
* **Batches by index.** A :class:`BatchSource` keeps the data in memory on the training device and draws
  ``batch(step)`` as a pure function of the step (seeded epoch permutations, per-step seeded augmentation):
  no DataLoader, static shapes, nothing to remember for resuming.
* **Randomness.** Every random draw of step ``s`` (data, noise, dropout) comes from generators seeded by
  ``(seed, s, rank)`` (:func:`step_seed`), so an interrupted run resumes exactly; checkpoints also keep every
  RNG state (torch CPU/GPU, numpy, Python) as safetensors + JSON.
* **The step.** Forward under autocast, backward, clipping, AdamW (fused on a GPU) and EMA; on one GPU the
  whole step is captured once as a CUDA graph and replayed (``cuda_graph``), optionally with the model
  ``torch.compile``d at static shapes (``compile``). Losses stay on the device until a log line.
* **Checkpoints** every ``checkpoint_every`` steps and every ``checkpoint_minutes``, and at SIGTERM (then
  :class:`TrainingInterrupted`): ``<out>/checkpoints/step_<N>/`` with safetensors tensors (model, EMA, AdamW
  moments, RNG states) and JSON (step, hyper-parameters, RNG positions, elapsed time accumulated across runs).
  No pickles.
* **Several processes** (``accelerate launch --multi_gpu --num_processes N``): data-parallel with the recipe
  kept in samples seen (:func:`scale_for_processes`), each process drawing its own share of every global
  batch; checkpoints, logs and callbacks on the main process only.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..core.io import atomic_folder, atomic_path, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """Settings every trainer shares (each model's config adds its own fields).

    The recipe is counted for ONE process: ``max_steps`` batches of ``batch_size``. Under ``accelerate launch``
    with N processes the same recipe is kept in samples seen (see :func:`scale_for_processes`).
    """

    max_steps: int = 1000  # optimisation steps of one process at batch_size (N processes run ceil(max_steps / N))
    batch_size: int = 32  # clips per batch per process
    learning_rate: float = 2e-4  # peak AdamW learning rate (one process; N processes scale it, see lr_scaling)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10% of the peak
    grad_clip: float = 1.0  # max global grad norm (0 disables clipping)
    ema_decay: float = 0.0  # EMA of the weights (0 disables); the saved model uses the EMA weights
    mixed_precision: str | None = None  # None: accelerate's setting, else bf16 on a GPU / no on a CPU; or no/bf16/fp16
    gradient_accumulation_steps: int = 1  # each batch runs as this many micro-batches (same recipe, less memory)
    checkpoint_every: int = 500  # steps between resumable checkpoints (0 = only at the end)
    checkpoint_minutes: float = 5.0  # also checkpoint when this many minutes passed since the last one (0 = off)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    keep_weights_every: int = 0  # also keep the saved weights (EMA's if on) every N steps and at the end, in weights/ (0 = off)
    log_every: int = 10  # steps between logged loss lines
    num_workers: int = 0  # unused since batches are drawn by index from memory (kept for old configs)
    seed: int = 0  # seeds every random draw: data order, augmentation, noise, dropout
    compile: bool = False  # torch.compile the model with static shapes (the paper presets turn it on: faster on a GPU)
    cuda_graph: bool = True  # on one GPU, replay the whole step (fwd, bwd, clip, AdamW, EMA) as one CUDA graph
    lr_scaling: str = "sqrt"  # learning rate under N processes: "sqrt" (x sqrt(N), AdamW), "linear" (x N), "none"


# --- precedence of settings -------------------------------------------------------------------------------
MIXED_PRECISION_CHOICES = ("no", "bf16", "fp16")


def _accelerate_config_mixed_precision() -> str | None:
    """``mixed_precision`` of the ``accelerate config`` file (``ACCELERATE_CONFIG_FILE`` or accelerate's default)."""
    try:
        from accelerate.commands.config.config_args import default_config_file, load_config_from_file
    except ImportError:  # pragma: no cover - accelerate moved it
        return None
    path = os.environ.get("ACCELERATE_CONFIG_FILE") or default_config_file
    if not path or not Path(path).is_file():
        return None
    try:
        value = getattr(load_config_from_file(path), "mixed_precision", None)
    except Exception:  # noqa: BLE001 - an unreadable config file is accelerate's business, not ours
        return None
    value = getattr(value, "value", value)
    return str(value) if value else None


def resolve_mixed_precision(explicit: str | None = None) -> tuple[str, str]:
    """``(mixed_precision, where it came from)`` by the project's one precedence rule.

    1. an explicit setting (``express4d train ... --mixed-precision``, or ``LoopConfig.mixed_precision``);
    2. accelerate's own settings: ``accelerate launch --mixed_precision`` and ``ACCELERATE_MIXED_PRECISION``
       (``accelerate launch`` exports its flag and its config file's value in that variable), then the
       ``accelerate config`` file when the script runs without ``accelerate launch``;
    3. the preset's default: bf16 on a GPU that supports it, no mixed precision on a CPU.
    """
    if explicit not in (None, "", "auto"):
        if explicit not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {explicit!r}")
        return str(explicit), "explicit"
    env = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if env:
        return env, "accelerate (ACCELERATE_MIXED_PRECISION / accelerate launch)"
    configured = _accelerate_config_mixed_precision()
    if configured:
        return configured, "accelerate config"
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    gpu = torch.cuda.is_available() and not use_cpu
    return ("bf16" if gpu and torch.cuda.is_bf16_supported() else "no"), "default"


def select_mixed_precision(setting: str | None) -> str:
    """The mixed precision a run uses (:func:`resolve_mixed_precision` without the source)."""
    return resolve_mixed_precision(setting)[0]


def make_accelerator(out_dir: Path, mixed_precision: str | None = None):
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


def scale_for_processes(config: LoopConfig, num_processes: int) -> LoopConfig:
    """The one-process recipe on ``num_processes`` data-parallel processes, kept in samples seen.

    The global batch is ``batch_size x N``, so there are ``ceil(max_steps / N)`` steps; warm-up, checkpoint
    and logging intervals keep their length in samples (divided by N); the EMA keeps its horizon in samples
    (``decay ** N`` per step); the learning rate follows ``lr_scaling``: ``sqrt`` (the square-root rule for
    adaptive optimisers such as AdamW, Malladi et al. 2022), ``linear`` (Goyal et al. 2017) or ``none``.

    >>> c = scale_for_processes(LoopConfig(max_steps=1000, warmup_steps=100, learning_rate=1e-4, ema_decay=0.99), 4)
    >>> c.max_steps, c.warmup_steps, round(c.learning_rate, 6), round(c.ema_decay, 6)
    (250, 25, 0.0002, 0.960596)
    """
    n = int(num_processes)
    if n <= 1:
        return config
    rules = {"sqrt": math.sqrt(n), "linear": float(n), "none": 1.0}
    if config.lr_scaling not in rules:
        raise ValueError(f"lr_scaling must be one of {sorted(rules)}, got {config.lr_scaling!r}")

    def per(steps: int) -> int:
        return max(1, round(steps / n)) if steps else 0

    return replace(
        config, max_steps=-(-config.max_steps // n), warmup_steps=per(config.warmup_steps),
        checkpoint_every=per(config.checkpoint_every), log_every=per(config.log_every),
        keep_weights_every=per(config.keep_weights_every),
        learning_rate=config.learning_rate * rules[config.lr_scaling],
        ema_decay=config.ema_decay**n if config.ema_decay > 0 else 0.0,
    )  # fmt: skip


def step_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """The seed of every random draw of one step: a pure function of ``(seed, step, rank, stream)``.

    Data order and augmentation, diffusion noise and dropout of step ``s`` depend on nothing else, so a
    resumed run draws exactly what an uninterrupted one would, whatever the device or graph replay does.
    """
    return int(np.random.SeedSequence([int(seed) % 2**63, int(step), int(rank), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


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
    """Exponential moving average of a model's floating-point parameters and buffers.

    :meth:`update_` takes the decay as a device tensor, so the update can sit inside a CUDA graph.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple[list, list, list, list] | None = None
        self._weight: torch.Tensor | None = None

    def step_decay(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))  # short warm-up: early EMA follows the weights

    def _bind(self, model: torch.nn.Module) -> None:
        floats_e, floats_m, other_e, other_m = [], [], [], []
        for ema_t, t in zip(self.shadow.state_dict().values(), model.state_dict().values()):
            if ema_t.dtype.is_floating_point:
                floats_e.append(ema_t)
                floats_m.append(t)
            else:
                other_e.append(ema_t)
                other_m.append(t)
        self._pairs = (floats_e, floats_m, other_e, other_m)
        device = floats_e[0].device if floats_e else torch.device("cpu")
        self._weight = torch.zeros((), device=device)

    @torch.no_grad()
    def update_(self, model: torch.nn.Module, weight: torch.Tensor | None = None) -> None:
        """``ema += (1 - decay) * (model - ema)`` with ``weight = 1 - decay`` (a 0-d tensor, graph-safe)."""
        if self._pairs is None:
            self._bind(model)
        floats_e, floats_m, other_e, other_m = self._pairs
        weight = self._weight if weight is None else weight
        if floats_e:
            diff = torch._foreach_sub([t.detach().to(e.dtype) for e, t in zip(floats_e, floats_m)], floats_e)
            torch._foreach_mul_(diff, weight)
            torch._foreach_add_(floats_e, diff)
        for e, t in zip(other_e, other_m):
            e.copy_(t)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        if self._pairs is None:
            self._bind(model)
        self._weight.fill_(1 - self.step_decay(step))
        self.update_(model)

    def rebind(self) -> None:
        self._pairs = None


# --- safetensors + JSON checkpoints -----------------------------------------------------------------
def _lr_value(value: Any) -> Any:
    return float(value) if torch.is_tensor(value) else value


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [{k: _lr_value(v) for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = []
    for saved, current in zip(meta["param_groups"], optimizer.param_groups):
        group = dict(saved)
        if torch.is_tensor(current.get("lr")):  # capturable AdamW: lr stays a device tensor
            current["lr"].fill_(float(saved["lr"]))
            group["lr"] = current["lr"]
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state_files() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG state of this process: torch (CPU and each GPU) as safetensors tensors, numpy and Python as JSON."""
    import random

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    return tensors, {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss": gauss},
    }


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))]
        if states and len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    n = meta["numpy"]
    np.random.set_state((n["kind"], tensors["numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(folder: Path, model, optimizer, ema: EMA | None, step: int, extra: dict | None = None) -> None:
    """Write a resumable checkpoint atomically (temp folder, then rename): safetensors + JSON, no pickles.

    ``model.safetensors``, ``ema.safetensors``, ``optimizer.safetensors`` (AdamW moments and step counts),
    ``rng.safetensors`` (torch CPU/GPU generator states, numpy's key array) and ``state.json`` (step, optimizer
    hyper-parameters, numpy and Python RNG positions, ``extra``: elapsed time, recipe under N processes).
    """
    with atomic_folder(folder) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        if ema is not None:
            save_file({k: v.cpu().contiguous() for k, v in ema.shadow.state_dict().items()}, tmp / "ema.safetensors")
        tensors, meta = _optimizer_to_files(optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
        rng_tensors, rng_meta = rng_state_files()
        save_file(rng_tensors, tmp / "rng.safetensors")
        meta.update(step=step, rng=rng_meta, extra=extra or {})
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))


WEIGHTS_DIR = "weights"


def save_weights(out_dir: Path, model: torch.nn.Module, step: int) -> Path:
    """``<out_dir>/weights/step_<N>.safetensors``: the weights a training would save at ``step`` (the EMA's when it
    keeps one), for checkpoint selection (``LoopConfig.keep_weights_every``; read by
    :mod:`express4d_hf.evaluation.selection`). Unlike checkpoints they are never rotated away."""
    path = Path(out_dir) / WEIGHTS_DIR / f"step_{step}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp, metadata={"step": str(step)})
    return path


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))
    return ckpts[-1] if ckpts else None


def load_checkpoint(folder: Path, model, optimizer, ema: EMA | None, restore_rng: bool = True) -> tuple[int, dict]:
    model.load_state_dict(load_file(folder / "model.safetensors"))
    if ema is not None and (folder / "ema.safetensors").exists():
        ema.shadow.load_state_dict(load_file(folder / "ema.safetensors"))
    meta = json.loads((folder / "state.json").read_text())
    _optimizer_from_files(optimizer, load_file(folder / "optimizer.safetensors"), meta)
    if restore_rng and (folder / "rng.safetensors").exists() and "rng" in meta:
        restore_rng_state(load_file(folder / "rng.safetensors"), meta["rng"])
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


# --- batches drawn by index --------------------------------------------------------------------------------
def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled item order of one epoch: depends only on ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_items, generator=generator)


class BatchSource:
    """Batches as a pure function of the step: ``batch(step)`` is the same whenever and wherever it is asked.

    Each epoch is a seeded permutation of the items; a step takes the next ``batch_size x num_processes``
    of it (wrapping around when the split is smaller than one global batch, so every batch has the same
    shape) and this process takes its own ``batch_size`` share. A resumed run needs no loader position.
    Subclasses implement :meth:`gather` (indices -> batch on ``device``).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 device: torch.device | str = "cpu"):  # fmt: skip
        if num_items < 1:
            raise ValueError("cannot draw batches from an empty dataset")
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.rank, self.world, self.device = int(rank), int(world), torch.device(device)
        self.global_batch = self.batch_size * self.world
        self.steps_per_epoch = max(1, self.num_items // self.global_batch)
        self._orders: dict[int, torch.Tensor] = {}

    def indices(self, step: int) -> tuple[torch.Tensor, int]:
        """``(this process's item indices, epoch)`` of ``step``."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.num_items, self.seed, epoch)}
        order = self._orders[epoch]
        positions = torch.arange(k * self.global_batch + self.rank * self.batch_size,
                                 k * self.global_batch + (self.rank + 1) * self.batch_size) % self.num_items  # fmt: skip
        return order[positions], epoch

    def batch(self, step: int) -> Any:
        rows, epoch = self.indices(step)
        generator = torch.Generator(self.device).manual_seed(step_seed(self.seed, step, self.rank, 1))
        return self.gather(rows, epoch, generator)

    def gather(self, rows: torch.Tensor, epoch: int, generator: torch.Generator) -> Any:
        raise NotImplementedError


class DatasetBatches(BatchSource):
    """Any map-style dataset + collate function (items built on the host, then moved to ``device``)."""

    def __init__(self, dataset, collate_fn: Callable, batch_size: int, **kwargs: Any):
        super().__init__(len(dataset), batch_size, **kwargs)
        self.dataset, self.collate_fn = dataset, collate_fn

    def gather(self, rows, epoch, generator):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return to_device(self.collate_fn([self.dataset[int(i)] for i in rows]), self.device)


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and torch.is_tensor(batch[0]):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _copy_into(static: Any, fresh: Any) -> None:
    if static is fresh:
        return
    if torch.is_tensor(static):
        static.copy_(fresh, non_blocking=True)
    elif isinstance(static, dict):
        for key, value in static.items():
            _copy_into(value, fresh[key])


def _static_shapes(batch: Any) -> bool:
    """True when every value of the batch is a tensor (a batch a CUDA graph can take as static input)."""
    if torch.is_tensor(batch):
        return True
    if isinstance(batch, dict):
        return all(_static_shapes(v) for v in batch.values())
    return False


def _split(batch: Any, parts: int) -> list[Any]:
    """``parts`` micro-batches of a batch (tensors split on dim 0, lists sliced)."""
    if parts == 1:
        return [batch]
    if torch.is_tensor(batch):
        return list(batch.chunk(parts))
    if isinstance(batch, dict):
        split = {k: _split(v, parts) for k, v in batch.items()}
        return [{k: v[i] for k, v in split.items()} for i in range(parts)]
    if isinstance(batch, list):
        size = -(-len(batch) // parts)
        return [batch[i * size : (i + 1) * size] for i in range(parts)]
    return [batch] * parts


# --- one training step --------------------------------------------------------------------------------------
class _TrainStep:
    """Forward (autocast), backward, clipping, AdamW and EMA of one batch, eager or replayed as a CUDA graph.

    The graph is captured after a few eager steps (real steps of the recipe, not extra ones): inputs are
    copied into static buffers, the learning rate and the EMA weight live in device tensors, so one replay
    does the whole step with no host synchronisation. Losses stay on the device until a log line needs them.
    """

    WARMUP_STEPS = 3

    def __init__(self, model, raw_model, optimizer, params, loss_fn, config: LoopConfig, ema: EMA | None,
                 mixed_precision: str, device: torch.device, distributed: bool, use_graph: bool, accelerator):  # fmt: skip
        self.model, self.raw_model, self.optimizer, self.params = model, raw_model, optimizer, params
        self.loss_fn, self.config, self.ema, self.device = loss_fn, config, ema, device
        self.accelerator, self.distributed = accelerator, distributed
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        self.scaler = torch.amp.GradScaler(device.type) if mixed_precision == "fp16" else None
        self.parts = max(1, int(config.gradient_accumulation_steps))
        if config.batch_size % self.parts:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by gradient_accumulation_steps {self.parts}")
        self.use_graph = use_graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_batch = self.static_losses = None
        self.eager_steps = 0
        self.ema_weight = torch.zeros((), device=device) if ema is not None else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None, cache_enabled=not self.use_graph)

    def _body(self, batch) -> dict[str, torch.Tensor]:
        total: dict[str, torch.Tensor] = {}
        micro_batches = _split(batch, self.parts)
        for i, micro in enumerate(micro_batches):
            sync = (not self.distributed) or i == self.parts - 1
            context = self.model.no_sync() if not sync else _null()
            with context:
                with self.autocast():
                    losses = self.loss_fn(self.model, micro)
                loss = losses["loss"] / self.parts
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            for k, v in losses.items():
                v = v.detach().float()
                total[k] = total[k] + v / self.parts if k in total else v / self.parts
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip, foreach=self.device.type == "cuda")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update_(self.raw_model, self.ema_weight)
        return total

    def __call__(self, step: int, batch, lr: float) -> dict[str, torch.Tensor]:
        set_learning_rate(self.optimizer, lr)
        if self.ema is not None:
            self.ema_weight.fill_(1 - self.ema.step_decay(step))
        if not self.use_graph or self.eager_steps < self.WARMUP_STEPS:
            if self.use_graph:  # warm-up on a side stream, as CUDA graph capture requires
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    self.optimizer.zero_grad(set_to_none=True)
                    losses = self._body(batch)
                torch.cuda.current_stream().wait_stream(stream)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                losses = self._body(batch)
            self.eager_steps += 1
            return losses
        if self.graph is None:
            self.static_batch = batch
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.static_losses = self._body(self.static_batch)
            except Exception as err:  # noqa: BLE001 - a step that cannot be captured still trains, eagerly
                logger.warning("CUDA graph capture of the training step failed (%s: %s); training eagerly",
                               type(err).__name__, err)  # fmt: skip
                torch.cuda.synchronize()
                self.use_graph = False
                self.optimizer.zero_grad(set_to_none=True)
                return self._body(batch)
            self.graph = graph
        else:
            _copy_into(self.static_batch, batch)
        self.graph.replay()
        return self.static_losses


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def make_optimizer(params, config: LoopConfig, device: torch.device, capturable: bool) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.99): fused on a GPU; for graph replay capturable with the learning rate a device tensor."""
    kwargs: dict[str, Any] = dict(weight_decay=config.weight_decay, betas=(0.9, 0.99))
    if device.type == "cuda":
        kwargs["fused"] = True
        if capturable:
            kwargs.update(capturable=True, lr=torch.tensor(config.learning_rate, device=device))
    kwargs.setdefault("lr", config.learning_rate)
    return torch.optim.AdamW(params, **kwargs)


# --- interruption ---------------------------------------------------------------------------------------------
class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM (e.g. ``timeout``) reached a training: it saved a checkpoint at a step boundary and stopped.

    Running the same command again resumes from that checkpoint.
    """


class TrainingDiverged(RuntimeError):
    """A logged loss became NaN or infinite: the training stopped before writing more checkpoints of it."""


class _StopFlag:
    """Turns SIGTERM into a request that the loop honours at the next step boundary (main thread only)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):  # noqa: ARG001
                self.requested = True

            self._previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


@dataclass
class TrainingResult:
    model: torch.nn.Module  # the unwrapped model (EMA weights when EMA is on)
    step: int  # last completed step
    losses: list[dict[str, float]]  # logged records
    seconds: float  # wall time of this run (excluding earlier resumed runs)
    samples_per_s: float  # training throughput of this run
    total_seconds: float = 0.0  # loop wall time of every run that trained this model, resumed ones added up
    info: dict[str, Any] = field(default_factory=dict)  # how it ran: precision and its source, graph, processes


def run_training(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset | None,
    collate_fn: Callable | None,
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
    batches: Callable[..., BatchSource] | None = None,
    graph_safe: bool = False,
) -> TrainingResult:
    """Train ``model`` for ``config.max_steps`` with ``loss_fn`` and return it (EMA weights if enabled).

    Batches come from ``batches(batch_size=, seed=, rank=, world=, device=)`` (a :class:`BatchSource` factory:
    data resident on the device, drawn by index) or, failing that, from ``dataset`` + ``collate_fn``.
    ``graph_safe``: ``loss_fn`` has static shapes and no host synchronisation, so on one GPU the whole step may
    be captured as a CUDA graph (``config.cuda_graph``). ``on_step(step, model)`` runs every ``every`` steps on
    the main process (sample generation, validation, codebook statistics); a dict it returns is logged.
    ``checkpoints/step_<N>`` folders (every ``checkpoint_every`` steps and every ``checkpoint_minutes``, and at a
    SIGTERM) allow exact resuming: 200 steps straight and 100 + resume to 200 give identical weights.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    mixed_precision, precision_source = resolve_mixed_precision(config.mixed_precision)
    accelerator = make_accelerator(out_dir, mixed_precision)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    config = scale_for_processes(config, world)
    every = max(1, round(every / world)) if every and world > 1 else every
    distributed = world > 1
    use_graph = bool(config.cuda_graph and graph_safe and device.type == "cuda" and not distributed
                     and mixed_precision != "fp16")  # fmt: skip
    if batches is not None:
        source = batches(batch_size=config.batch_size, seed=config.seed, rank=rank, world=world, device=device)
    else:
        source = DatasetBatches(dataset, collate_fn, config.batch_size, seed=config.seed, rank=rank, world=world, device=device)
    use_graph = use_graph and _static_shapes(source.batch(0))
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    model.to(device)
    optimizer = make_optimizer(params, config, device, capturable=use_graph)
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    start_step, elapsed_before = 0, 0.0
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        start_step, extra = load_checkpoint(ckpt, model, optimizer, ema)
        elapsed_before = float(extra.get("elapsed_s", 0.0))
        logger.info("%s: resuming from %s (step %d)", name, ckpt, start_step)
    raw_model = model
    if config.compile:
        # static shapes (batches are padded to the preset's length): dynamic shapes crashed inside the compiled
        # backward; EXPRESS4D_COMPILE_BACKEND picks another backend (the CPU test uses aot_eager: fast to build)
        model = torch.compile(model, dynamic=False, backend=os.environ.get("EXPRESS4D_COMPILE_BACKEND", "inductor"))
    if distributed:
        model = accelerator.prepare_model(model)
    if ema is not None:
        ema.shadow.to(device)
    runner = _TrainStep(model, raw_model, optimizer, params, loss_fn, config, ema, mixed_precision, device,
                        distributed, use_graph, accelerator)  # fmt: skip
    log = LossLog(out_dir / f"{name}_losses.jsonl")
    if accelerator.is_main_process:
        log.truncate(start_step)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers(name)
    info = {"mixed_precision": mixed_precision, "mixed_precision_source": precision_source, "cuda_graph": use_graph,
            "compile": bool(config.compile), "processes": world, "gradient_accumulation_steps": runner.parts,
            "steps": config.max_steps, "global_batch": config.batch_size * world, "learning_rate": config.learning_rate,
            "ema_decay": config.ema_decay}  # fmt: skip
    bar = tqdm(total=config.max_steps, initial=start_step, desc=f"train {name}", disable=not progress or not accelerator.is_main_process, dynamic_ncols=True)
    running: dict[str, torch.Tensor] = {}
    count = 0
    t0 = time.perf_counter()
    last_checkpoint = t0
    step = start_step
    model.train()

    def checkpoint(done: int) -> None:
        nonlocal last_checkpoint
        elapsed = elapsed_before + time.perf_counter() - t0
        _checkpoint(accelerator, out_dir, raw_model, optimizer, ema, done, config.keep_checkpoints,
                    {"elapsed_s": round(elapsed, 3), "recipe": info})  # fmt: skip
        last_checkpoint = time.perf_counter()

    with _StopFlag() as stop:
        for step in range(start_step, config.max_steps):
            torch.manual_seed(step_seed(config.seed, step, rank, 2))  # dropout and any draw inside the model
            batch = source.batch(step)
            lr = config.learning_rate * cosine_schedule(step, config.warmup_steps, config.max_steps)
            losses = runner(step, batch, lr)
            for k, v in losses.items():
                running[k] = running[k] + v if k in running else v.clone()
            count += 1
            done = step + 1
            if done % config.log_every == 0 or done == config.max_steps:
                means = {k: float(v) / count for k, v in running.items()}
                first, running, count = done - count + 1, {}, 0
                broken = {k: v for k, v in means.items() if not math.isfinite(v)}
                if broken:  # going on would only write NaN weights over the last good checkpoint's successors
                    bar.close()
                    kept = latest_checkpoint(out_dir)
                    raise TrainingDiverged(
                        f"{name}: the mean {', '.join(f'{k} = {v}' for k, v in broken.items())} over steps "
                        f"{first}-{done}: the training diverged and stopped. "
                        + (f"The last checkpoint ({kept}) was written before it; " if kept else "No checkpoint was written; ")
                        + "lower the learning rate (or try --mixed-precision no) and train again."
                    )  # fmt: skip
                means["lr"] = lr
                if accelerator.is_main_process:
                    log.add(done, means)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items() if k != "lr"})
                accelerator.log(means, step=done)
            if on_step is not None and every and done % every == 0 and accelerator.is_main_process:
                evaluated = ema.shadow if ema is not None else raw_model
                was_training = evaluated.training
                evaluated.eval()
                extra = on_step(done, evaluated)
                evaluated.train(was_training)
                if extra:
                    log.add(done, extra)
                    accelerator.log(extra, step=done)
            if config.keep_weights_every and accelerator.is_main_process and (
                    done % config.keep_weights_every == 0 or done == config.max_steps):
                save_weights(out_dir, ema.shadow if ema is not None else raw_model, done)
            if done < config.max_steps:
                due = config.checkpoint_every and done % config.checkpoint_every == 0
                late = config.checkpoint_minutes > 0 and time.perf_counter() - last_checkpoint >= 60 * config.checkpoint_minutes
                if due or late or stop.requested:
                    checkpoint(done)
                if stop.requested:
                    bar.close()
                    raise TrainingInterrupted(f"{name}: stopped by SIGTERM at step {done}; checkpoint saved in "
                                              f"{out_dir / 'checkpoints'}; run the same command again to resume")  # fmt: skip
            bar.update(1)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint(config.max_steps)
        log.plot(out_dir / f"{name}_loss.png", f"{name} training loss")
    # Not accelerator.end_training(): it destroys the process group, after which a trainer can neither
    # synchronise its processes (wait_for_everyone) nor run a second stage (T2M-GPT's GPT after its VQ-VAE).
    for tracker in accelerator.trackers:
        tracker.finish()
    final = ema.shadow if ema is not None else raw_model
    final.eval()
    done_steps = max(0, config.max_steps - start_step)
    samples = done_steps * config.batch_size * world
    return TrainingResult(final, config.max_steps, log.records, seconds, samples / seconds if done_steps else 0.0,
                          total_seconds=elapsed_before + seconds, info=info)  # fmt: skip


def _checkpoint(accelerator, out_dir: Path, model, optimizer, ema, step: int, keep: int, extra: dict | None = None) -> None:
    if not accelerator.is_main_process:
        return
    save_checkpoint(out_dir / "checkpoints" / f"step_{step}", model, optimizer, ema, step, extra)
    ckpts = sorted((out_dir / "checkpoints").glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


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
