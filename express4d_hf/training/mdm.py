"""Train the MDM baseline (``express4d train mdm``) and leave a loadable ``Express4DMDMPipeline`` folder.

The recipe is MDM's (Tevet et al. 2023) on the Express4D training representation: the denoiser predicts the
clean motion x0 from x_t at a uniformly drawn step of the 1000-step cosine schedule; the loss is the MSE on
valid frames only (padding never counts), optionally plus MDM's velocity loss on consecutive-frame
differences; the text is dropped for 10% of samples so classifier-free guidance works; an EMA of the weights
is what gets saved. Pooled text embeddings of every training caption (and of every mirrored caption, since
mirror augmentation rewrites "left"/"right") are computed once: the text encoder is frozen and never runs
inside the loop.

Everything else (accelerate, bf16 on GPU, gradient clipping, checkpoints and exact resume, loss curves) is
:func:`~express4d_hf.training.common.run_training`, so ``accelerate launch -m express4d_hf.cli train mdm ...``
runs the same script on N processes.

``out_dir`` ends up holding::

    model_index.json, denoiser/, scheduler/, text_encoder/, tokenizer/, normalizer/, README.md   the pipeline
    training_metadata.json   config, seeds, versions, hardware, time, throughput, final loss
    mdm_loss.png, mdm_losses.jsonl   the loss curve
    samples/step_<N>/        a few generated clips (Live Link CSV at 60 fps + curves PNG) during training
    checkpoints/step_<N>/    resumable safetensors + JSON state
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..core.constants import MAX_FRAMES, MAX_LEADING_OFFSET, MIN_FRAMES, TRAIN_FPS
from ..core.io import files_into
from ..models.mdm import MDM_PRESETS, MDMDenoiser
from ..models.normalizer import MotionNormalizer
from ..pipelines.cards import training_data_card
from ..pipelines.mdm import Express4DMDMPipeline, default_scheduler, make_scheduler
from .common import LoopConfig, embed_caption_set, run_metadata, run_training, seed_everything, write_json
from ..livelink import write_livelink_csv

logger = logging.getLogger(__name__)

METADATA_NAME = "training_metadata.json"
METRICS_NAME = "metrics.json"


@dataclass
class MDMTrainConfig(LoopConfig):
    """MDM training. The ``LoopConfig`` fields (``max_steps``, ``batch_size``, ``learning_rate``, ``ema_decay``...)
    drive :func:`run_training`; the fields below are MDM's."""

    model_preset: str = "tiny"  # denoiser size: an MDM_PRESETS name ("tiny" or "paper")
    model_overrides: dict[str, Any] = field(default_factory=dict)  # denoiser config fields replacing the preset's
    text_encoder: str | None = None  # transformers encoder name or path (None: the offline all-MiniLM-L6-v2)
    num_train_timesteps: int = 1000  # diffusion steps of the cosine (squaredcos_cap_v2) schedule
    cond_drop_prob: float = 0.1  # share of samples trained without text (classifier-free guidance)
    velocity_loss_weight: float = 0.0  # weight of MDM's velocity loss (MSE of frame-to-frame differences of x0)
    mirror_prob: float = 0.5  # probability of a left/right mirrored training sample (motion and caption)
    max_leading_offset: int = MAX_LEADING_OFFSET  # training samples lose a random 0..N leading frames
    trim_padding: bool = True  # on a CPU, pad batches to their longest clip (rounded up to 16), not 196: same loss, less work
    cpu_threads: int = 0  # torch threads when training on a CPU (0: torch's default, one per core)
    sample_every: int = 500  # steps between sample generations under out_dir/samples (0: never)
    num_samples: int = 3  # test captions generated at each sample step
    sample_scheduler: str = "ddim"  # sampler of those samples ("ddpm", "ddim" or "dpmsolver++")
    sample_steps: int = 50  # its number of steps
    guidance_scale: float = 2.5  # classifier-free guidance of the samples (and the card's recommended value)
    validation_holdout: float = 0.0  # train without this share of train (data.splits.split_validation, seeded): checkpoint selection

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MDMTrainConfig:
        """``tiny``: a few minutes on a 2-core CPU; ``paper``: MDM's 8-layer, 512-wide denoiser, one GPU.

        ``tiny`` trains on one CPU thread: its small matrices gain little from a second one, and when anything
        else runs on the machine, two threads per process fight over the cores and every step gets 5-10x
        slower (measured on the 2-core development machine).
        """
        presets = {
            "tiny": dict(
                model_preset="tiny", max_steps=1500, batch_size=32, learning_rate=1e-3, warmup_steps=100,
                weight_decay=0.0, ema_decay=0.995, checkpoint_every=500, log_every=20, sample_every=500, cpu_threads=1,
            ),
            "paper": dict(
                model_preset="paper", max_steps=100_000, batch_size=64, learning_rate=1e-4, warmup_steps=1000,
                weight_decay=0.0, ema_decay=0.9999, checkpoint_every=5000, log_every=50, sample_every=5000, compile=True,
            ),
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"unknown MDM training preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def with_max_steps(self, steps: int) -> MDMTrainConfig:
        """Cap the run at ``steps`` (checkpoint and sample intervals shrink to fit), e.g. for a smoke test."""
        if steps < 1:
            raise ValueError(f"max_steps must be positive, got {steps}")
        return replace(self, max_steps=steps, warmup_steps=min(self.warmup_steps, max(1, steps // 10)),
                       checkpoint_every=min(self.checkpoint_every, steps),
                       sample_every=min(self.sample_every, steps) if self.sample_every else 0)  # fmt: skip

    def loop_config(self) -> LoopConfig:
        return LoopConfig(**{f.name: getattr(self, f.name) for f in fields(LoopConfig)})

    def build_denoiser(self, text_dim: int, text_token_dim: int | None = None) -> MDMDenoiser:
        """``text_token_dim``: width of the token states when it differs from the pooled ``text_dim`` (CLIP
        mode; only the order-aware presets read it)."""
        if self.model_preset not in MDM_PRESETS:
            raise ValueError(f"unknown MDM preset {self.model_preset!r}; choose one of {sorted(MDM_PRESETS)}")
        token_dim = {"text_token_dim": text_token_dim} if text_token_dim not in (None, text_dim) else {}
        return MDMDenoiser.from_preset(self.model_preset, text_dim=text_dim, num_train_timesteps=self.num_train_timesteps,
                                       **{**token_dim, **self.model_overrides})  # fmt: skip


# --- the loss ------------------------------------------------------------------------------------------------
class CaptionTable:
    """Caption -> pooled text embedding, as one tensor moved to the training device once; for order-aware
    models also the token states (padded ``[N, L, D]`` table and token counts)."""

    def __init__(self, embeddings: dict[str, Any]):
        self.index = {caption: i for i, caption in enumerate(embeddings)}
        values = list(embeddings.values())
        self.states: torch.Tensor | None = None
        self.token_counts: torch.Tensor | None = None
        if values and isinstance(values[0], tuple):  # (pooled, token states) from embed_caption_set(with_tokens=True)
            self.table = torch.stack([pooled for pooled, _ in values])
            self.token_counts = torch.tensor([len(states) for _, states in values])
            self.states = torch.nn.utils.rnn.pad_sequence([states for _, states in values], batch_first=True)
        else:
            self.table = torch.stack(values) if values else torch.zeros(0)

    @property
    def has_tokens(self) -> bool:
        return self.states is not None

    def _rows(self, captions: list[str], device: torch.device) -> torch.Tensor:
        try:
            return torch.tensor([self.index[c] for c in captions], device=device)
        except KeyError as err:
            raise KeyError(f"caption {err} has no precomputed embedding; it is not in the training split") from None

    def lookup(self, captions: list[str], device: torch.device) -> torch.Tensor:
        if self.table.device != device:
            self.table = self.table.to(device)
        return self.table[self._rows(captions, device)]

    def lookup_tokens(self, captions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token states [B, L, D], mask [B, L])`` of ``captions``, ``L`` = the batch's longest caption."""
        if self.states is None:
            raise ValueError("this CaptionTable holds pooled embeddings only (embed_caption_set(with_tokens=True))")
        if self.states.device != device:
            self.states, self.token_counts = self.states.to(device), self.token_counts.to(device)
        rows = self._rows(captions, device)
        counts = self.token_counts[rows]
        length = int(counts.max())
        mask = torch.arange(length, device=device)[None] < counts[:, None]
        return self.states[rows, :length], mask

    def subset(self, captions: list[str]) -> CaptionTable:
        """A table of ``captions`` only, in that order (row ``i`` is ``captions[i]``)."""
        rows = self._rows(captions, self.table.device)
        if self.states is None:
            return CaptionTable({c: self.table[r] for c, r in zip(captions, rows.tolist())})
        return CaptionTable({c: (self.table[r], self.states[r, : int(self.token_counts[r])]) for c, r in zip(captions, rows.tolist())})

    def _to(self, device: torch.device) -> None:
        if self.table.device != device:
            self.table = self.table.to(device)
        if self.states is not None and self.states.device != device:
            self.states, self.token_counts = self.states.to(device), self.token_counts.to(device)

    def rows(self, ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Pooled embeddings of table rows ``ids`` (a tensor: no host synchronisation)."""
        self._to(device)
        return self.table[ids]

    def condition_rows(self, ids: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """:meth:`condition` by row index, padded to the table's longest caption (static shapes)."""
        if self.states is None:
            return {}
        self._to(device)
        mask = torch.arange(self.states.shape[1], device=device)[None] < self.token_counts[ids][:, None]
        return {"encoder_token_states": self.states[ids], "encoder_attention_mask": mask}

    def token_rows(self, ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token states, mask)`` by row index, padded to the table's longest caption."""
        condition = self.condition_rows(ids, device)
        if not condition:
            raise ValueError("this CaptionTable holds pooled embeddings only (embed_caption_set(with_tokens=True))")
        return condition["encoder_token_states"], condition["encoder_attention_mask"]

    def condition(self, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """The denoiser's text keyword arguments: ``encoder_token_states`` and ``encoder_attention_mask`` when
        the table holds token states, nothing otherwise."""
        if self.states is None:
            return {}
        states, mask = self.lookup_tokens(captions, device)
        return {"encoder_token_states": states, "encoder_attention_mask": mask}


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid frames only (``mask [B, T]`` True on real frames).

    >>> x = torch.zeros(1, 3, 2); y = torch.ones(1, 3, 2); y[0, 2] = 100.0  # the padded frame is ignored
    >>> float(masked_mse(x, y, torch.tensor([[True, True, False]])))
    1.0
    """
    weights = mask[..., None].to(prediction.dtype)
    return ((prediction - target) ** 2 * weights).sum() / (weights.sum() * prediction.shape[-1]).clamp_min(1.0)


class MDMBatches:
    """Factory of MDM's training batches: :class:`~.batches.MotionBatches` plus the diffusion draws of the step
    (timesteps, noise, text dropout), all from the step's seeded generator on the training device."""

    def __init__(self, dataset, config: MDMTrainConfig, vocabulary):
        self.dataset, self.config, self.vocabulary = dataset, config, vocabulary

    def __call__(self, **kwargs: Any):
        from .batches import MotionBatches

        config = self.config
        trim = 16 if config.trim_padding and not config.compile else 0

        class _Batches(MotionBatches):
            def gather(inner, rows, epoch, generator):  # noqa: N805
                batch = super().gather(rows, epoch, generator)
                size, device = len(rows), inner.device
                batch["timesteps"] = torch.randint(0, config.num_train_timesteps, (size,), device=device, generator=generator)
                batch["noise"] = torch.randn(batch["motion"].shape, device=device, generator=generator)
                batch["cond_drop"] = torch.rand(size, device=device, generator=generator) < config.cond_drop_prob
                return batch

        return _Batches(self.dataset, vocabulary=self.vocabulary, trim_multiple=trim, **kwargs)


def mdm_loss_fn(config: MDMTrainConfig, captions: CaptionTable | torch.Tensor):
    """The ``loss_fn(model, batch)`` of :func:`run_training`: x0 MSE on valid frames (+ velocity loss).

    ``captions`` holds the text of every caption index a batch names (``caption_ids``), in vocabulary order: a
    :class:`CaptionTable` (pooled embeddings, and token states for order-aware denoisers) or a plain
    ``[num_captions, D]`` tensor of pooled embeddings. The timesteps, noise and text dropout come with the batch
    (:class:`MDMBatches`), so the loss has static shapes and no host synchronisation (CUDA-graph safe).
    """
    if torch.is_tensor(captions):
        captions = CaptionTable(dict(enumerate(captions)))
    alphas = default_scheduler(config.num_train_timesteps).alphas_cumprod.float()
    tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x0, mask = batch["motion"], batch["mask"]
        device = x0.device
        if device not in tables:
            tables[device] = (alphas.to(device).sqrt(), (1 - alphas.to(device)).sqrt())
        signal, noise_scale = tables[device]
        t, ids = batch["timesteps"], batch["caption_ids"]
        noisy = signal[t][:, None, None] * x0 + noise_scale[t][:, None, None] * batch["noise"]
        prediction = model(noisy, t, captions.rows(ids, device), frame_mask=mask, cond_drop_mask=batch["cond_drop"],
                           **captions.condition_rows(ids, device)).float()
        losses = {"mse": masked_mse(prediction, x0, mask)}
        loss = losses["mse"]
        if config.velocity_loss_weight > 0:
            pair_mask = mask[:, 1:] & mask[:, :-1]
            losses["velocity"] = masked_mse(prediction.diff(dim=1), x0.diff(dim=1), pair_mask)
            loss = loss + config.velocity_loss_weight * losses["velocity"]
        return {"loss": loss, **losses} if len(losses) > 1 else {"loss": loss}

    return loss_fn


def collate_trimmed(items: list[dict[str, Any]], multiple: int = 16) -> dict[str, Any]:
    """``collate_motion`` padded to the batch's longest clip rounded up to ``multiple`` frames (at most 196).

    Padding is masked out of attention and of the loss, so trimming it changes nothing but the cost; rounding
    keeps the number of distinct shapes small (compiled kernels, allocator reuse).

    >>> import torch
    >>> items = [{"motion": torch.zeros(n, 61), "length": n, "caption": "a", "id": str(n)} for n in (21, 40)]
    >>> collate_trimmed(items)["motion"].shape
    torch.Size([2, 48, 61])
    """
    from ..data.torch import collate_motion

    longest = max(int(item["length"]) for item in items)
    return collate_motion(items, max_frames=min(MAX_FRAMES, -(-longest // multiple) * multiple))


# --- samples during training ---------------------------------------------------------------------------------
class SampleWriter:
    """``on_step`` callback: generate a few test captions with the current EMA weights and write them out."""

    def __init__(self, out_dir: Path, config: MDMTrainConfig, normalizer: MotionNormalizer, tokenizer, text_encoder,
                 prompts: list[tuple[str, int]]):  # fmt: skip
        self.out_dir, self.config, self.prompts = out_dir, config, prompts
        self.normalizer, self.tokenizer, self.text_encoder = normalizer, tokenizer, text_encoder
        self.pipe: Express4DMDMPipeline | None = None

    def __call__(self, step: int, model: torch.nn.Module) -> None:
        from ..export.plotting import caption_slug, plot_channel_curves

        if not self.prompts:
            return
        if self.pipe is None or self.pipe.denoiser is not model:
            device = next(model.parameters()).device
            self.pipe = Express4DMDMPipeline(
                denoiser=model, scheduler=make_scheduler(self.config.sample_scheduler, default_scheduler().config),
                text_encoder=self.text_encoder.to(device), tokenizer=self.tokenizer, normalizer=self.normalizer.to(device),
            )  # fmt: skip
            self.pipe.set_progress_bar_config(disable=True)
        captions = [caption for caption, _ in self.prompts]
        lengths = [length for _, length in self.prompts]
        generators = [torch.Generator().manual_seed(self.config.seed + i) for i in range(len(captions))]
        motions = self.pipe(captions, num_frames=lengths, generator=generators, num_inference_steps=self.config.sample_steps,
                            guidance_scale=self.config.guidance_scale).motions  # fmt: skip
        folder = self.out_dir / "samples" / f"step_{step}"
        for i, motion in enumerate(motions):
            stem = f"{i:02d}_{caption_slug(motion.caption)}"
            write_livelink_csv(motion, folder / f"{stem}.csv")
            plot_channel_curves(motion, folder / f"{stem}.png", title=f"step {step}: {motion.caption}")


# --- the trainer ---------------------------------------------------------------------------------------------
def train_mdm(
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs/mdm",
    config: MDMTrainConfig | None = None,
    text_encoder: tuple[Any, Any] | None = None,
    progress: bool = True,
    resume: bool = True,
) -> Express4DMDMPipeline:
    """Train MDM on ``data`` (None: the embedded procedural corpus) and save a loadable pipeline in ``out_dir``.

    Args:
        data: release folder, built dataset folder or Hub dataset id (see ``load_express4d``).
        out_dir: output folder; ``Express4DMDMPipeline.from_pretrained(out_dir)`` loads the result.
        config: training settings (default ``MDMTrainConfig.preset("tiny")``).
        text_encoder: an already loaded ``(tokenizer, model)`` pair; default: ``config.text_encoder``.
        progress: progress bars.
        resume: continue from the latest checkpoint in ``out_dir/checkpoints`` when there is one.

    Returns:
        The trained pipeline (EMA weights, DDPM training scheduler), on the CPU.
    """
    config = config or MDMTrainConfig.preset("tiny")
    threads = torch.get_num_threads()
    if config.cpu_threads > 0 and not torch.cuda.is_available():
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train_mdm(data, out_dir, config, text_encoder, progress, resume)
    finally:
        torch.set_num_threads(threads)


def _train_mdm(
    data, out_dir, config: MDMTrainConfig, text_encoder, progress: bool, resume: bool
) -> Express4DMDMPipeline:
    from accelerate import PartialState

    from ..data.hub import dataset_stats, load_express4d
    from ..data.splits import hold_out_validation
    from ..data.torch import MotionDataset
    from ..models.text import DEFAULT_TEXT_ENCODER, load_text_encoder, text_hidden_size, text_token_size

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    splits = hold_out_validation(load_express4d(data, progress=progress), config.validation_holdout, config.seed)
    stats = dataset_stats(data)
    train_set = MotionDataset(
        splits["train"], stats, train=True, fps=TRAIN_FPS, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES,
        max_leading_offset=config.max_leading_offset, mirror_prob=config.mirror_prob, seed=config.seed,
    )  # fmt: skip
    if len(train_set) == 0:
        raise ValueError(
            f"{data or 'the procedural corpus'}: the train split has no clip of at least {MIN_FRAMES} frames"
        )
    tokenizer, encoder = text_encoder if text_encoder is not None else load_text_encoder(config.text_encoder)
    from .batches import CaptionVocabulary

    vocabulary = CaptionVocabulary(train_set.captions, mirror=config.mirror_prob > 0)
    caption_set = set(vocabulary.captions)
    text_dim = text_hidden_size(encoder)
    seed_everything(config.seed)  # the initial weights follow the seed, not what ran before in this process
    denoiser = config.build_denoiser(text_dim, text_token_size(encoder))
    embeddings = embed_caption_set(caption_set, tokenizer, encoder, progress=progress, with_tokens=denoiser.uses_text_tokens)
    captions = CaptionTable({c: embeddings[c] for c in vocabulary.captions})  # rows in vocabulary order
    normalizer = MotionNormalizer.from_stats(stats)
    test_set = MotionDataset(splits["test"], stats, train=False) if "test" in splits else None
    prompts = (
        [(test_set.captions[i][0], int(test_set.lengths[i])) for i in range(min(config.num_samples, len(test_set)))]
        if test_set
        else []
    )
    sampler = SampleWriter(out_dir, config, normalizer, tokenizer, encoder, prompts)
    logger.info("mdm: %d training clips, %d captions (with mirrors), %.2f M parameters",
                len(train_set), len(caption_set), sum(p.numel() for p in denoiser.parameters()) / 1e6)  # fmt: skip

    result = run_training(
        denoiser, None, None, mdm_loss_fn(config, captions), config.loop_config(), out_dir,
        name="mdm", on_step=sampler if config.sample_every else None, every=config.sample_every, resume=resume,
        progress=progress, batches=MDMBatches(train_set, config, vocabulary), graph_safe=True,
    )  # fmt: skip
    denoiser = result.model.to("cpu")
    pipe = Express4DMDMPipeline(
        denoiser=denoiser, scheduler=default_scheduler(config.num_train_timesteps), text_encoder=encoder.to("cpu"),
        tokenizer=tokenizer, normalizer=normalizer.to("cpu"),
    )  # fmt: skip
    final_loss = next((r["loss"] for r in reversed(result.losses) if "loss" in r), None)
    train_seconds = time.perf_counter() - started
    data_name = str(data) if data is not None else "procedural corpus"
    pipe.card_data = {
        "model_name": f"Express4D MDM baseline ({config.model_preset})",
        "preset": config.model_preset,
        "text_encoder": config.text_encoder or f"sentence-transformers/{DEFAULT_TEXT_ENCODER}",
        "training_data": f"{data_name}: {len(train_set)} training clips, {len(caption_set)} distinct captions "
        "(mirrors included)" + (" — the synthetic procedural corpus, not the real capture" if data is None else ""),
        "training": f"{config.max_steps} steps, batch {config.batch_size} per process, AdamW lr {config.learning_rate:g} "
        f"(cosine), EMA {config.ema_decay}, text dropout {config.cond_drop_prob:.0%}, "
        f"velocity loss weight {config.velocity_loss_weight:g}, seed {config.seed}; final loss {final_loss:.4f}"
        if final_loss is not None else "not recorded",
        "hardware": run_metadata(config)["hardware"],
        "dataset": training_data_card(data),  # licence, datasets: and model-index of the card (pipelines/cards.py)
    }  # fmt: skip
    if PartialState().is_main_process:
        metadata = run_metadata(
            config, data=data_name, train_clips=len(train_set), captions=len(caption_set), steps=result.step,
            train_seconds=round(train_seconds, 1), loop_seconds=round(result.seconds, 1),
            samples_per_s=round(result.samples_per_s, 1), final_loss=final_loss,
            loop_seconds_all_runs=round(result.total_seconds, 1), execution=result.info,
            parameters=sum(p.numel() for p in denoiser.parameters()),
        )  # fmt: skip
        previous = out_dir / METADATA_NAME
        if previous.is_file():  # a resumed run: keep what the earlier run(s) measured
            earlier = json.loads(previous.read_text())
            metadata["earlier_runs"] = earlier.pop("earlier_runs", []) + [
                {k: earlier.get(k) for k in ("created", "steps", "train_seconds", "loop_seconds", "samples_per_s")}
            ]
        save_pipeline_folder(pipe, out_dir)
        write_json(out_dir / METADATA_NAME, metadata)
    PartialState().wait_for_everyone()
    return pipe


def save_pipeline_folder(pipe: Express4DMDMPipeline, out_dir: Path) -> None:
    """Save into a temporary folder beside ``out_dir``, then move each entry in, ``model_index.json`` last.

    A crash mid-save never leaves a ``model_index.json`` that points at missing or half-written components;
    the training artefacts already in ``out_dir`` (checkpoints, samples, curves) are kept.
    """
    with files_into(out_dir, last="model_index.json") as tmp:
        pipe.save_pretrained(tmp)
