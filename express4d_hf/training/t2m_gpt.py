"""Train T2M-GPT in two stages (``express4d train vqvae`` / ``express4d train t2m-gpt``) and leave a loadable
``Express4DT2MGPTPipeline`` folder.

Stage 1 (:func:`train_vqvae`) trains the motion tokenizer on random windows of normalised training clips
(upstream: 64 frames), with left/right mirroring and leading-offset augmentation; codebook health (perplexity,
dead codes) is logged while it trains. Stage 2 (:func:`train_t2m_gpt`) tokenises the dataset ONCE (each clip
and its mirror, cached in ``out_dir/tokens.safetensors`` and reused while the tokenizer and data are
unchanged), embeds every caption once with the frozen text encoder, and trains the GPT on
``[text token; codes; end]`` with upstream's code corruption (probability ``tau``) and random dropping of the
first or last code. Both stages run through :func:`~express4d_hf.training.common.run_training` (bf16 on GPU,
``accelerate launch`` for N GPUs, exact resume, progress, loss PNGs).

``out_dir`` of ``train t2m-gpt`` ends up holding::

    model_index.json, vqvae/, transformer/, text_encoder/, tokenizer/, normalizer/, README.md   the pipeline
    vqvae_training/          stage 1 (unless --vqvae): its model, stats.json, checkpoints/, curves
    tokens.safetensors, tokens.json   the tokenised dataset (codes of every clip and its mirror)
    checkpoints/step_<N>/    stage 2 resumable safetensors + JSON state
    gpt_loss.png, gpt_losses.jsonl    stage 2 curves (training and held-out token cross-entropy)
    samples/step_<N>/        a few generated test captions (Live Link CSV + curves PNG)
    training_metadata.json   configs, seeds, versions, hardware, times, throughputs, reconstruction error
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.arkit import mirror_caption, mirror_values
from ..core.constants import MAX_FRAMES, MAX_LEADING_OFFSET, MIN_FRAMES, TRAIN_FPS
from ..core.io import atomic_path, atomic_write_text, files_into
from ..models.normalizer import MotionNormalizer
from ..models.t2m_gpt import GPT_PRESETS, MIN_CODES, T2MGPT, VQVAE_PRESETS, MotionVQVAE
from ..pipelines.cards import training_data_card
from ..pipelines.t2m_gpt import Express4DT2MGPTPipeline
from .common import (
    LoopConfig, LossLog, embed_caption_set, run_metadata, run_training, seed_everything, write_json,
)
from .mdm import CaptionTable, save_pipeline_folder
from ..livelink import write_livelink_csv

logger = logging.getLogger(__name__)

METADATA_NAME = "training_metadata.json"
METRICS_NAME = "metrics.json"
VQVAE_STAGE_DIR = "vqvae_training"
TOKENS_NAME = "tokens.safetensors"
TOKENS_INFO_NAME = "tokens.json"
CAPTIONS_NAME = "caption_embeddings.safetensors"
STATS_NAME = "stats.json"


# --- configs -------------------------------------------------------------------------------------------------
class _StepsMixin:
    def with_max_steps(self, steps: int):
        """Cap the run at ``steps`` (warm-up, checkpoint and logging intervals shrink to fit), e.g. a smoke test."""
        if steps < 1:
            raise ValueError(f"max_steps must be positive, got {steps}")
        changes = dict(max_steps=steps, warmup_steps=min(self.warmup_steps, max(1, steps // 10)),
                       checkpoint_every=min(self.checkpoint_every, steps), log_every=min(self.log_every, steps))  # fmt: skip
        for name in ("usage_every", "sample_every"):
            if hasattr(self, name) and getattr(self, name):
                changes[name] = min(getattr(self, name), steps)
        return replace(self, **changes)

    def loop_config(self) -> LoopConfig:
        return LoopConfig(**{f.name: getattr(self, f.name) for f in fields(LoopConfig)})


@dataclass
class VQVAETrainConfig(_StepsMixin, LoopConfig):
    """Stage 1: the motion tokenizer. The ``LoopConfig`` fields drive :func:`run_training`; ``ema_decay`` stays
    0 because a weight EMA would also average the codebook buffers (the codebook has its own EMA)."""

    model_preset: str = "tiny"  # VQVAE_PRESETS name ("tiny": 128 codes x 64 d; "paper": upstream 512 x 512)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # MotionVQVAE config fields replacing the preset's
    window_frames: int = 64  # training crop length in frames (upstream window_size 64); shorter clips are padded
    mirror_prob: float = 0.5  # probability of a left/right mirrored training window
    max_leading_offset: int = MAX_LEADING_OFFSET  # clips lose a random 0..N leading frames before windowing
    usage_every: int = 100  # steps between codebook-usage logs (perplexity, dead codes); 0 = never
    validation_holdout: float = 0.0  # train without this share of train (data.splits.split_validation, seeded): checkpoint selection

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VQVAETrainConfig:
        """``tiny``: ~1.5 min on one CPU core; ``paper``: upstream's recipe (lr 2e-4, batch 256, 64-frame windows)
        shortened from 200k to 50k steps for ~1k clips, one GPU."""
        presets = {
            "tiny": dict(model_preset="tiny", max_steps=800, batch_size=64, learning_rate=1e-3, warmup_steps=50,
                         checkpoint_every=400, log_every=20, usage_every=100),
            "paper": dict(model_preset="paper", max_steps=50_000, batch_size=256, learning_rate=2e-4, warmup_steps=1000,
                          checkpoint_every=5000, log_every=50, usage_every=500, compile=True, keep_weights_every=2500),
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"unknown VQ-VAE training preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def build_model(self) -> MotionVQVAE:
        if self.model_preset not in VQVAE_PRESETS:
            raise ValueError(f"unknown VQ-VAE preset {self.model_preset!r}; choose one of {sorted(VQVAE_PRESETS)}")
        return MotionVQVAE.from_preset(self.model_preset, **self.model_overrides)


@dataclass
class GPTTrainConfig(_StepsMixin, LoopConfig):
    """Stage 2: the text-to-code transformer. The ``LoopConfig`` fields drive :func:`run_training`."""

    model_preset: str = "tiny"  # GPT_PRESETS name ("tiny": 2 x 128; "paper": 8 x 512, see T2MGPT)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # T2MGPT config fields replacing the preset's
    text_encoder: str | None = None  # transformers encoder name or path (None: the offline all-MiniLM-L6-v2)
    corruption_prob: float = 0.5  # tau: share of input codes replaced by random codes (upstream pkeep = 0.5)
    token_drop_prob: float = 1 / 3  # upstream: with this probability drop the first or the last code of a sample
    mirror_prob: float = 0.5  # probability of training on the mirrored clip's codes (and mirrored caption)
    sample_every: int = 500  # steps between held-out loss + sample generation (0 = never)
    num_samples: int = 3  # test captions generated at each sample step
    tokenize_batch_size: int = 64  # clips per forward pass when tokenising the dataset
    validation_holdout: float = 0.0  # train without this share of train (data.splits.split_validation, seeded): checkpoint selection

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTTrainConfig:
        """``tiny``: a few minutes on a 2-core CPU; ``paper``: upstream's lr 1e-4, batch 128, tau 0.5, one GPU."""
        presets = {
            "tiny": dict(model_preset="tiny", max_steps=800, batch_size=64, learning_rate=1e-3, warmup_steps=50,
                         weight_decay=0.01, ema_decay=0.995, checkpoint_every=400, log_every=20, sample_every=400),
            "paper": dict(model_preset="paper", max_steps=60_000, batch_size=128, learning_rate=1e-4, warmup_steps=1000,
                          weight_decay=0.01, ema_decay=0.999, checkpoint_every=5000, log_every=50, sample_every=5000,
                          compile=True),
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"unknown GPT training preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def build_model(self, num_codes: int, text_dim: int, text_token_dim: int | None = None) -> T2MGPT:
        """``text_token_dim``: width of the token states when it differs from the pooled ``text_dim`` (CLIP
        mode; only the order-aware presets read it)."""
        if self.model_preset not in GPT_PRESETS:
            raise ValueError(f"unknown GPT preset {self.model_preset!r}; choose one of {sorted(GPT_PRESETS)}")
        token_dim = {"text_token_dim": text_token_dim} if text_token_dim not in (None, text_dim) else {}
        return T2MGPT.from_preset(self.model_preset, num_codes=num_codes, text_dim=text_dim,
                                  **{**token_dim, **self.model_overrides})  # fmt: skip


# --- stage 1 data and loss --------------------------------------------------------------------------------
class MotionWindows(torch.utils.data.Dataset):
    """Random ``window`` -frame crops of a :class:`~express4d_hf.data.torch.MotionDataset`'s training items.

    Each item is ``dict(motion [window, 61], mask [window])``; clips shorter than the window are zero padded
    and masked. The crop start comes from ``(seed, epoch, index)`` (resume-exact, worker-independent).
    """

    def __init__(self, clips, window: int, seed: int = 0):
        if window < 4 or window % 4:
            raise ValueError(f"window_frames must be a positive multiple of 4, got {window}")
        self.clips, self.window, self.seed, self.epoch = clips, int(window), int(seed), 0

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.clips.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.clips[index]
        motion, length = item["motion"], int(item["length"])
        if length > self.window:
            start = int(np.random.default_rng([self.seed, self.epoch, index, 1]).integers(0, length - self.window + 1))
            motion, length = motion[start : start + self.window], self.window
        padded = torch.zeros(self.window, motion.shape[1])
        padded[:length] = motion[:length]
        return {"motion": padded, "mask": torch.arange(self.window) < length}


def collate_windows(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"motion": torch.stack([b["motion"] for b in batch]), "mask": torch.stack([b["mask"] for b in batch])}


def _process_state():
    """accelerate's process state, initialised as the Accelerator would (``ACCELERATE_USE_CPU`` makes a
    multi-process CPU run distributed over gloo), whichever of them comes first."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def vqvae_loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``loss_fn`` of stage 1: the forward runs through the (possibly DDP-wrapped) model."""
    reconstruction, _, commitment, perplexity = model(batch["motion"], batch["mask"])
    out = _unwrap(model).loss_from_outputs(reconstruction, commitment, perplexity, batch["motion"], batch["mask"])
    return {"loss": out.loss, "reconstruction": out.reconstruction, "velocity": out.velocity,
            "commitment": out.commitment}  # fmt: skip


def codebook_usage_callback(step: int, model: torch.nn.Module) -> dict[str, float]:
    """``on_step`` of stage 1: codebook perplexity and dead codes from the EMA usage counts."""
    usage = _unwrap(model).codebook_usage()
    return {"perplexity": usage["perplexity"], "dead_codes": usage["dead_codes"]}


@torch.no_grad()
def reconstruction_error(vqvae: MotionVQVAE, clips, batch_size: int = 64) -> dict[str, float]:
    """Normalised-space MSE and L1 of encode -> decode over the valid frames of ``clips`` (a MotionDataset).

    Each clip is tokenised on its own first ``length // 4 * 4`` frames (the frames the codes cover).
    ``mean_mse`` is the MSE of predicting the training mean (zero in normalised space) on the same frames: a
    tokenizer near it has learnt nothing (``tokenizer_failure``).
    """
    from ..data.torch import collate_motion

    vqvae = vqvae.eval()
    device = vqvae.device
    sq, ab, base, count = 0.0, 0.0, 0.0, 0
    for start in range(0, len(clips), batch_size):
        batch = collate_motion([clips[i] for i in range(start, min(len(clips), start + batch_size))])
        motion = batch["motion"].to(device)
        recon = vqvae.reconstruct(motion, batch["lengths"])
        covered = (batch["lengths"] // vqvae.downsample * vqvae.downsample).to(device)
        mask = (torch.arange(recon.shape[1], device=device)[None] < covered[:, None])[..., None].float()
        diff = (recon - motion[:, : recon.shape[1]]) * mask
        sq += float((diff**2).sum())
        ab += float(diff.abs().sum())
        base += float(((motion[:, : recon.shape[1]] * mask) ** 2).sum())
        count += int(mask.sum()) * motion.shape[-1]
    return {"mse": sq / max(count, 1), "l1": ab / max(count, 1), "mean_mse": base / max(count, 1), "clips": len(clips)}


def tokenizer_failure(recon: dict[str, float] | None) -> str | None:
    """What is wrong with a tokenizer that reconstructs no better than 0.9x the mean predictor (it learnt
    nothing), from its :func:`reconstruction_error`; None when it learnt (or metadata has no baseline)."""
    if recon and recon.get("mean_mse") and recon["mse"] >= 0.9 * recon["mean_mse"]:
        return f"the tokenizer reconstructs the test clips no better than their mean (MSE {recon['mse']:.3f} vs {recon['mean_mse']:.3f})"
    return None


# --- stage 1 -------------------------------------------------------------------------------------------------
def train_vqvae(
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs/vqvae",
    config: VQVAETrainConfig | None = None,
    progress: bool = True,
    resume: bool = True,
) -> MotionVQVAE:
    """Train the motion tokenizer on ``data`` (None: the embedded procedural corpus) into ``out_dir``.

    ``out_dir`` ends as a ``MotionVQVAE.from_pretrained`` folder (``config.json`` + safetensors) holding also
    ``stats.json`` (the normalisation it was trained with), ``training_metadata.json`` (with the test-split
    reconstruction error), ``vqvae_loss.png``, ``vqvae_codebook.png`` and ``checkpoints/``.
    """
    from ..data.hub import dataset_stats, load_express4d
    from ..data.splits import hold_out_validation
    from ..data.torch import MotionDataset

    config = config or VQVAETrainConfig.preset("tiny")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    splits = hold_out_validation(load_express4d(data, progress=progress), config.validation_holdout, config.seed)
    stats = dataset_stats(data)
    clips = MotionDataset(splits["train"], stats, train=True, fps=TRAIN_FPS, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES,
                          max_leading_offset=config.max_leading_offset, mirror_prob=config.mirror_prob, seed=config.seed)  # fmt: skip
    if len(clips) == 0:
        raise ValueError(f"{data or 'the procedural corpus'}: the train split has no clip of at least {MIN_FRAMES} frames")
    from .batches import MotionBatches

    if config.window_frames < 4 or config.window_frames % 4:
        raise ValueError(f"window_frames must be a positive multiple of 4, got {config.window_frames}")
    seed_everything(config.seed)  # the initial weights follow the seed, not what ran before in this process
    model = config.build_model()
    logger.info("vqvae: %d training clips, %.2f M parameters, %d codes x %d", len(clips),
                sum(p.numel() for p in model.parameters()) / 1e6, model.config.num_codes, model.config.code_dim)  # fmt: skip
    result = run_training(
        model, None, None, vqvae_loss_fn, config.loop_config(), out_dir, name="vqvae",
        on_step=codebook_usage_callback if config.usage_every else None, every=config.usage_every, resume=resume,
        progress=progress, batches=lambda **kw: MotionBatches(clips, window=config.window_frames, **kw), graph_safe=True,
    )  # fmt: skip
    vqvae = result.model.to("cpu").eval()
    if _process_state().is_main_process:
        selection = None
        if config.keep_weights_every:  # held-out clips when there are some, else the training clips (never test)
            split = "validation" if "validation" in splits else "train"
            selection = select_tokenizer_weights(vqvae, out_dir, MotionDataset(splits[split], stats, train=False), split,
                                                progress)
        test = MotionDataset(splits["test"], stats, train=False) if "test" in splits else None
        recon = reconstruction_error(vqvae, test) if test is not None and len(test) else None
        save_model_folder(vqvae, out_dir)
        stats.save(out_dir / STATS_NAME)
        _plot_curves(out_dir / "vqvae_losses.jsonl", {
            "vqvae_loss.png": ("VQ-VAE training loss", ["loss", "reconstruction", "velocity", "commitment"]),
            "vqvae_codebook.png": ("VQ-VAE codebook usage", ["perplexity", "dead_codes"]),
        })  # fmt: skip
        write_json(out_dir / METADATA_NAME, run_metadata(
            config, stage="vqvae", data=str(data) if data is not None else "procedural corpus",
            data_fingerprint=_data_fingerprint(data), train_clips=len(clips),
            steps=result.step, train_seconds=round(time.perf_counter() - started, 1), loop_seconds=round(result.seconds, 1),
            loop_seconds_all_runs=round(result.total_seconds, 1), execution=result.info,
            samples_per_s=round(result.samples_per_s, 1), reconstruction_test=recon, codebook=vqvae.codebook_usage(),
            final_loss=_last(result.losses, "loss"), parameters=sum(p.numel() for p in vqvae.parameters()),
            selection=selection,
        ))  # fmt: skip
        logger.info("vqvae: test reconstruction %s, codebook %s", recon, vqvae.codebook_usage())
        failure = tokenizer_failure(recon)
        if failure:
            logger.warning("vqvae: %s: T2M-GPT trained on its codes cannot generate motion; see %s", failure,
                           out_dir / "vqvae_loss.png")  # fmt: skip
    _process_state().wait_for_everyone()
    if config.keep_weights_every and not _process_state().is_main_process:
        vqvae = MotionVQVAE.from_pretrained(out_dir).eval()  # the weights the main process selected and saved
    return vqvae


def select_tokenizer_weights(vqvae: MotionVQVAE, out_dir: Path, clips, split: str, progress: bool = False) -> dict[str, Any] | None:
    """Load into ``vqvae`` the kept weights (``keep_weights_every``) that reconstruct ``clips`` best, and say which.

    Why: the paper-preset tokenizer can blow up late in training (commitment loss from ~0.3 to ~1e7 after step
    5-6k of a 10k run on the H200, in two runs of 2026-12-02, while the reconstruction had been improving), and
    the final weights then reconstruct worse than the mean. Choosing among the kept weights on clips other than
    the test split keeps the last good tokenizer. Ties go to the later step.
    """
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    from ..evaluation.selection import saved_weights

    kept = saved_weights(out_dir)
    if not kept or not len(clips):
        return None
    mse = {}
    for step, path in tqdm(kept, desc="vqvae: selecting weights", disable=not progress, leave=False):
        vqvae.load_state_dict(load_file(str(path)))
        mse[step] = reconstruction_error(vqvae, clips)["mse"]
    best = min(mse, key=lambda step: (mse[step], -step))
    vqvae.load_state_dict(load_file(str(dict(kept)[best])))
    vqvae.eval()
    last = kept[-1][0]
    record = {"criterion": f"lowest reconstruction MSE on the {split} clips (never test); ties: the later step",
              "split": split, "clips": len(clips), "selected_step": best, "last_step": last,
              "mse_by_step": {str(step): round(value, 6) for step, value in mse.items()}}  # fmt: skip
    if best != last and mse[last] > 1.1 * mse[best]:
        record["worsened"] = True
        logger.warning("vqvae: the reconstruction got worse after step %d (%s MSE %.4f there, %.4f at step %d): the "
                       "training was unstable; keeping step %d", best, split, mse[best], mse[last], last, best)  # fmt: skip
    return record


def save_model_folder(model, out_dir: Path) -> None:
    """``model.save_pretrained`` into a temp folder, then move the files in with ``config.json`` last."""
    with files_into(out_dir, last="config.json") as tmp:
        model.save_pretrained(tmp)


def load_vqvae(folder: str | os.PathLike) -> tuple[MotionVQVAE, Any]:
    """``(vqvae, stats or None)`` from a ``train vqvae`` folder or from a T2M-GPT pipeline folder (its ``vqvae/``)."""
    from ..core.stats import NormStats

    folder = Path(folder)
    if (folder / "config.json").is_file() and _class_name(folder / "config.json") == "MotionVQVAE":
        stats = NormStats.load(folder / STATS_NAME) if (folder / STATS_NAME).is_file() else None
        return MotionVQVAE.from_pretrained(folder).eval(), stats
    if (folder / "vqvae" / "config.json").is_file():
        stats = None
        if (folder / "normalizer" / "config.json").is_file():
            stats = MotionNormalizer.from_pretrained(folder / "normalizer").to_stats()
        return MotionVQVAE.from_pretrained(folder / "vqvae").eval(), stats
    raise FileNotFoundError(f"{folder}: not a VQ-VAE folder (no config.json of a MotionVQVAE, no vqvae/ sub-folder); "
                            "pass the --out of `express4d train vqvae` or of `express4d train t2m-gpt`")  # fmt: skip


def _class_name(config_path: Path) -> str | None:
    try:
        return json.loads(config_path.read_text()).get("_class_name")
    except (json.JSONDecodeError, OSError):
        return None


def _data_fingerprint(data) -> str | None:
    """The built dataset's fingerprint (its manifest), or None when it has none."""
    from ..data.hub import dataset_fingerprint

    try:
        return dataset_fingerprint(data)
    except (FileNotFoundError, KeyError, ValueError):
        return None


def _stage_done(folder: Path, config: LoopConfig, data) -> bool:
    """A stage-1 folder trained on the same data with the same config, model saved: reuse it, do not retrain."""
    meta = folder / METADATA_NAME
    if not (meta.is_file() and (folder / "config.json").is_file()):
        return False
    try:
        recorded = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False
    same_config = recorded.get("config") == json.loads(json.dumps(run_metadata(config)["config"], default=str))
    return same_config and recorded.get("data_fingerprint") == _data_fingerprint(data)


# --- tokenising the dataset once --------------------------------------------------------------------------
@dataclass
class TokenizedSplit:
    """Codes of every clip of a split (``-1`` past each length), the codes of its mirror, and its captions."""

    codes: torch.Tensor  # [N, max_codes] long
    mirror_codes: torch.Tensor  # [N, max_codes] long
    lengths: torch.Tensor  # [N] codes per clip (the same for the mirror)
    captions: list[list[str]]  # every caption line of each clip


@torch.no_grad()
def tokenize_clips(vqvae: MotionVQVAE, clips, stats, batch_size: int = 64, progress: bool = True) -> TokenizedSplit:
    """Encode each clip of ``clips`` (a deterministic MotionDataset) and its left/right mirror.

    Clips are grouped by their number of codes and each group is encoded at exactly its length, so no clip
    is padded (padding would leak into its last codes through the conv receptive field) and a split costs
    at most ``49`` batched passes per direction instead of one per clip.
    """
    from tqdm.auto import tqdm

    vqvae = vqvae.eval()
    per_code = vqvae.downsample
    max_codes = MAX_FRAMES // per_code
    lengths = torch.as_tensor(clips.lengths // per_code, dtype=torch.long)
    codes = torch.full((len(clips), max_codes), -1, dtype=torch.long)
    mirror = codes.clone()
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths.tolist()):
        groups.setdefault(n, []).append(i)
    jobs = [(n, rows[s : s + batch_size]) for n, rows in sorted(groups.items()) for s in range(0, len(rows), batch_size)]
    for n, rows in tqdm(jobs, desc="tokenise clips", disable=not progress):
        frames = n * per_code
        raw = np.stack([clips.raw_motions[i][:frames] for i in rows]).astype(np.float32)
        for target, values in ((codes, raw), (mirror, mirror_values(raw))):
            batch = torch.from_numpy(np.ascontiguousarray(stats.normalize(values), dtype=np.float32))
            target[rows, :n] = vqvae.encode(batch.to(vqvae.device)).cpu()
    return TokenizedSplit(codes, mirror, lengths, [list(c) for c in clips.captions])


def _fingerprint(vqvae: MotionVQVAE, stats, splits: dict[str, Any]) -> str:
    """sha256 of the tokenizer's weights, the stats and the clips it encodes (invalidates the token cache)."""
    digest = hashlib.sha256(b"express4d-t2m-gpt-tokens/1")
    for name, tensor in sorted(vqvae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(stats.mean.tobytes() + stats.std.tobytes())
    for split_name, clips in splits.items():
        digest.update(split_name.encode())
        for clip_id, values, captions in zip(clips.ids, clips.raw_motions, clips.captions):
            digest.update(f"{clip_id}\0{json.dumps(captions)}\0".encode())
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def load_or_tokenize(vqvae: MotionVQVAE, splits: dict[str, Any], stats, out_dir: Path, batch_size: int = 64,
                     progress: bool = True) -> dict[str, TokenizedSplit]:  # fmt: skip
    """The cached tokenised splits in ``out_dir/tokens.safetensors``, recomputed only when the fingerprint changes.

    On several processes the main one tokenises and writes the cache; the others wait and read it.
    """
    from safetensors.torch import load_file, save_file

    state = _process_state()
    fingerprint = _fingerprint(vqvae, stats, splits)
    path, info_path = out_dir / TOKENS_NAME, out_dir / TOKENS_INFO_NAME

    def cached() -> bool:
        try:
            return path.is_file() and json.loads(info_path.read_text()).get("fingerprint") == fingerprint
        except (OSError, json.JSONDecodeError):
            return False

    if state.is_main_process and not cached():
        tensors, info = {}, {"fingerprint": fingerprint, "splits": {}}
        for name, clips in splits.items():
            tok = tokenize_clips(vqvae, clips, stats, batch_size, progress)
            tensors.update({f"{name}.codes": tok.codes, f"{name}.mirror_codes": tok.mirror_codes, f"{name}.lengths": tok.lengths})
            info["splits"][name] = {"ids": list(clips.ids), "captions": tok.captions, "num_codes": int(tok.lengths.sum())}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp)
        write_json(info_path, info)
        logger.info("tokenised %s into %s", {k: len(v) for k, v in splits.items()}, path)
    state.wait_for_everyone()
    tensors, info = load_file(path), json.loads(info_path.read_text())
    splits_out = {}
    for name, meta in info["splits"].items():
        splits_out[name] = TokenizedSplit(tensors[f"{name}.codes"], tensors[f"{name}.mirror_codes"],
                                          tensors[f"{name}.lengths"], meta["captions"])  # fmt: skip
    return splits_out


def cached_caption_embeddings(caption_set, tokenizer, text_encoder, path: Path, progress: bool = True,
                              with_tokens: bool = False) -> dict[str, Any]:  # fmt: skip
    """:func:`embed_caption_set` once per (text encoder, caption set, with_tokens): a resumed or repeated run
    reads ``path``. With ``with_tokens`` the values are ``(pooled, token states)`` pairs (order-aware GPT).

    On several processes the main one embeds and writes the file; the others wait and read it.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    state = _process_state()
    captions = sorted(set(caption_set))
    encoder_id = str(getattr(text_encoder, "name_or_path", "") or type(text_encoder).__name__)
    key = hashlib.sha256(json.dumps([encoder_id, captions] + (["tokens"] if with_tokens else [])).encode()).hexdigest()

    def read() -> dict[str, Any] | None:
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            names = json.loads(f.metadata()["captions"])
            pooled = f.get_tensor("embeddings")
            if not with_tokens:
                return dict(zip(names, pooled))
            states, counts = f.get_tensor("token_states"), f.get_tensor("token_counts").tolist()
            return {c: (pooled[i], states[i, : int(counts[i])].clone()) for i, c in enumerate(names)}

    table = read() if state.is_main_process else None
    if state.is_main_process and table is None:
        table = embed_caption_set(captions, tokenizer, text_encoder, progress=progress, with_tokens=with_tokens)
        if with_tokens:
            tensors = {
                "embeddings": torch.stack([table[c][0] for c in captions]).contiguous(),
                "token_states": torch.nn.utils.rnn.pad_sequence([table[c][1] for c in captions], batch_first=True).contiguous(),
                "token_counts": torch.tensor([len(table[c][1]) for c in captions]),
            }
        else:
            tensors = {"embeddings": torch.stack([table[c] for c in captions]).contiguous()}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={"key": key, "encoder": encoder_id, "captions": json.dumps(captions)})
    state.wait_for_everyone()
    return table if table is not None else read()


def _check_gpt_checkpoints(out_dir: Path, resume: bool) -> None:
    """Refuse to resume stage 2 from checkpoints trained on other tokens (the tokenizer or the data changed)."""
    from .common import latest_checkpoint

    current = json.loads((out_dir / TOKENS_INFO_NAME).read_text())["fingerprint"]
    marker = out_dir / "checkpoints" / "tokens_fingerprint.txt"
    if resume and latest_checkpoint(out_dir) is not None and marker.is_file() and marker.read_text().strip() != current:
        raise ValueError(f"{out_dir / 'checkpoints'}: these GPT checkpoints were trained on other motion codes (the "
                         "tokenizer or the data changed since); pass --no-resume (resume=False) to train stage 2 afresh")  # fmt: skip
    if _process_state().is_main_process:
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, current + "\n")


# --- stage 2 data and loss --------------------------------------------------------------------------------
class CodeSequences(torch.utils.data.Dataset):
    """Training items ``dict(codes [max_codes], length, caption)`` from a :class:`TokenizedSplit`.

    Per item, from ``(seed, epoch, index)``: the mirrored clip's codes and mirrored caption with probability
    ``mirror_prob``, a random caption line, and (upstream) dropping the first or last code with probability
    ``token_drop_prob`` (never below ``min_codes``).
    """

    def __init__(self, tokens: TokenizedSplit, pad_id: int, mirror_prob: float = 0.5, token_drop_prob: float = 1 / 3,
                 min_codes: int = MIN_CODES, seed: int = 0):  # fmt: skip
        self.tokens, self.pad_id, self.mirror_prob, self.token_drop_prob = tokens, pad_id, mirror_prob, token_drop_prob
        self.min_codes, self.seed, self.epoch = min_codes, int(seed), 0

    def __len__(self) -> int:
        return len(self.tokens.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        mirrored = rng.random() < self.mirror_prob
        codes = (self.tokens.mirror_codes if mirrored else self.tokens.codes)[index]
        length = int(self.tokens.lengths[index])
        codes = codes[:length]
        caption = self.tokens.captions[index][int(rng.integers(len(self.tokens.captions[index])))]
        caption = mirror_caption(caption) if mirrored else caption
        if length > self.min_codes and rng.random() < self.token_drop_prob:
            codes = codes[:-1] if rng.random() < 0.5 else codes[1:]
            length -= 1
        padded = torch.full((self.tokens.codes.shape[1],), self.pad_id, dtype=torch.long)
        padded[:length] = codes
        return {"codes": padded, "length": length, "caption": caption}


def collate_codes(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return {"codes": torch.stack([b["codes"] for b in batch]), "lengths": torch.tensor([b["length"] for b in batch]),
            "captions": [b["caption"] for b in batch]}  # fmt: skip


def _token_kwargs(captions: CaptionTable, names: list[str], device) -> dict[str, torch.Tensor]:
    """The order-aware GPT's ``text_token_states`` / ``text_mask`` (nothing for a pooled table)."""
    if not captions.has_tokens:
        return {}
    states, mask = captions.lookup_tokens(names, device)
    return {"text_token_states": states, "text_mask": mask}


def gpt_loss_fn(captions: CaptionTable | torch.Tensor, tau: float):
    """The ``loss_fn`` of stage 2: corrupted teacher forcing through the (possibly DDP-wrapped) model.

    Batches of :class:`~.batches.CodeBatches` name their captions by index (``caption_ids``, rows of
    ``captions`` in vocabulary order: static shapes, graph-safe); batches of caption strings (``captions``)
    are looked up by name. ``captions`` may also be a plain ``[num_captions, D]`` tensor of pooled embeddings."""
    if torch.is_tensor(captions):
        captions = CaptionTable(dict(enumerate(captions)))

    def text_of(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "caption_ids" in batch:
            ids = batch["caption_ids"]
            condition = captions.condition_rows(ids, device)
            tokens = {"text_token_states": condition["encoder_token_states"], "text_mask": condition["encoder_attention_mask"]} if condition else {}
            return captions.rows(ids, device), tokens
        return captions.lookup(batch["captions"], device), _token_kwargs(captions, batch["captions"], device)

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        gpt = _unwrap(model)
        text, tokens = text_of(batch, batch["codes"].device)
        inputs, target = gpt.training_sequences(batch["codes"], batch["lengths"], tau)
        logits, _ = model(inputs, text, **tokens)
        out = gpt.loss_from_logits(logits, target)
        return {"loss": out.loss, "accuracy": out.accuracy.detach()}

    return loss_fn


class GPTMonitor:
    """``on_step`` of stage 2: held-out token cross-entropy (``split``: validation when held out, else test; no
    corruption) and a few samples."""

    def __init__(self, out_dir: Path, config: GPTTrainConfig, held: TokenizedSplit | None, captions: CaptionTable,
                 vqvae: MotionVQVAE, normalizer: MotionNormalizer, tokenizer, text_encoder, split: str = "test"):  # fmt: skip
        self.out_dir, self.config, self.held, self.captions, self.split = out_dir, config, held, captions, split
        self.vqvae, self.normalizer, self.tokenizer, self.text_encoder = vqvae, normalizer, tokenizer, text_encoder

    @torch.no_grad()
    def held_out(self, model: T2MGPT) -> dict[str, float]:
        if self.held is None or not len(self.held.lengths):
            return {}
        device = next(model.parameters()).device
        total, acc, count = 0.0, 0.0, 0
        for start in range(0, len(self.held.lengths), 128):
            rows = slice(start, start + 128)
            lengths = self.held.lengths[rows].to(device)
            codes = self.held.codes[rows].clamp_min(0).to(device)
            names = [c[0] for c in self.held.captions[rows]]
            text = self.captions.lookup(names, device)
            inputs, target = model.training_sequences(codes, lengths, 0.0)
            logits, _ = model(inputs, text, **_token_kwargs(self.captions, names, device))
            out = model.loss_from_logits(logits, target)
            tokens = int((lengths + 1).sum())
            total, acc, count = total + float(out.loss) * tokens, acc + float(out.accuracy) * tokens, count + tokens
        return {"val_loss": total / count, "val_accuracy": acc / count}

    def __call__(self, step: int, model: torch.nn.Module) -> dict[str, float]:
        from ..export.plotting import caption_slug, plot_channel_curves

        model = _unwrap(model)
        metrics = self.held_out(model)
        if self.held is not None and self.config.num_samples:
            device = next(model.parameters()).device
            pipe = Express4DT2MGPTPipeline(vqvae=self.vqvae.to(device), transformer=model, text_encoder=self.text_encoder.to(device),
                                           tokenizer=self.tokenizer, normalizer=self.normalizer.to(device))  # fmt: skip
            prompts = [c[0] for c in self.held.captions[: self.config.num_samples]]
            generators = [torch.Generator().manual_seed(self.config.seed + i) for i in range(len(prompts))]
            folder = self.out_dir / "samples" / f"step_{step}"
            for i, motion in enumerate(pipe(prompts, generator=generators).motions):
                stem = f"{i:02d}_{caption_slug(motion.caption)}"
                write_livelink_csv(motion, folder / f"{stem}.csv")
                plot_channel_curves(motion, folder / f"{stem}.png", title=f"step {step}: {motion.caption}")
        return metrics


# --- stage 2 -------------------------------------------------------------------------------------------------
def train_t2m_gpt(
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs/t2m_gpt",
    vq_config: VQVAETrainConfig | None = None,
    gpt_config: GPTTrainConfig | None = None,
    vqvae_dir: str | os.PathLike | None = None,
    text_encoder: tuple[Any, Any] | None = None,
    progress: bool = True,
    resume: bool = True,
) -> Express4DT2MGPTPipeline:
    """Train both stages on ``data`` (None: the embedded procedural corpus) and save the pipeline in ``out_dir``.

    Args:
        data: release folder, built dataset folder or Hub dataset id (see ``load_express4d``).
        out_dir: output folder; ``Express4DT2MGPTPipeline.from_pretrained(out_dir)`` loads the result.
        vq_config, gpt_config: stage settings (default: the ``tiny`` presets).
        vqvae_dir: reuse a trained tokenizer (a ``train vqvae`` folder or a T2M-GPT pipeline folder) instead of
            stage 1; its normalisation stats must match the data's.
        text_encoder: an already loaded ``(tokenizer, model)`` pair; default: ``gpt_config.text_encoder``.
        progress: progress bars.
        resume: continue both stages from their checkpoints; a finished stage 1 with the same config is reused.

    Returns:
        The trained pipeline (EMA weights of the GPT), on the CPU.
    """
    from ..data.hub import dataset_stats, load_express4d
    from ..data.splits import hold_out_validation
    from ..data.torch import MotionDataset
    from ..models.text import DEFAULT_TEXT_ENCODER, load_text_encoder, text_hidden_size, text_token_size

    vq_config = vq_config or VQVAETrainConfig.preset("tiny")
    gpt_config = gpt_config or GPTTrainConfig.preset("tiny")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    splits = hold_out_validation(load_express4d(data, progress=progress), gpt_config.validation_holdout, gpt_config.seed)
    stats = dataset_stats(data)

    # stage 1: the tokenizer
    stage_dir = out_dir / VQVAE_STAGE_DIR
    if vqvae_dir is not None:
        vqvae, vq_stats = load_vqvae(vqvae_dir)
        if vq_stats is not None and not (np.allclose(vq_stats.mean, stats.mean, atol=1e-5) and np.allclose(vq_stats.std, stats.std, atol=1e-5)):
            raise ValueError(f"{vqvae_dir}: the tokenizer was trained with other normalisation stats than {data or 'the procedural corpus'}'s; "
                             "train it on this data (`express4d train vqvae --data ...`) or drop --vqvae")  # fmt: skip
        vq_source = str(vqvae_dir)
    elif resume and _stage_done(stage_dir, vq_config, data):
        logger.info("t2m-gpt: reusing the finished stage 1 in %s", stage_dir)
        failure = tokenizer_failure(json.loads((stage_dir / METADATA_NAME).read_text()).get("reconstruction_test"))
        if failure:
            logger.warning("t2m-gpt: reusing %s, but %s; train it again with --no-resume", stage_dir, failure)
        vqvae, _ = load_vqvae(stage_dir)
        vq_source = str(stage_dir)
    else:
        vqvae = train_vqvae(data, stage_dir, vq_config, progress=progress, resume=resume)
        vq_source = str(stage_dir)
    vq_seconds = time.perf_counter() - started

    # tokenise once, embed captions once
    device = _process_state().device
    train_clips = MotionDataset(splits["train"], stats, train=False)
    # The held-out loss is monitored on the validation clips when checkpoint selection holds them out (nothing
    # about training then looks at test), else on test (monitoring only: nothing is selected by it).
    held = "validation" if "validation" in splits else "test"
    held_clips = MotionDataset(splits[held], stats, train=False) if held in splits else None
    eval_splits = {"train": train_clips, **({held: held_clips} if held_clips is not None and len(held_clips) else {})}
    tokens = load_or_tokenize(vqvae.to(device), eval_splits, stats, out_dir, gpt_config.tokenize_batch_size, progress)
    _check_gpt_checkpoints(out_dir, resume)
    vqvae.to("cpu")
    tokenizer, encoder = text_encoder if text_encoder is not None else load_text_encoder(gpt_config.text_encoder)
    caption_set = {c for clip in tokens["train"].captions for c in clip}
    if gpt_config.mirror_prob > 0:
        caption_set |= {mirror_caption(c) for c in caption_set}
    num_train_captions = len(caption_set)
    if held in tokens:  # for the held-out loss only
        caption_set |= {clip[0] for clip in tokens[held].captions}
    seed_everything(gpt_config.seed)  # the initial weights follow the seed, not what ran before in this process
    gpt = gpt_config.build_model(vqvae.config.num_codes, text_hidden_size(encoder), text_token_size(encoder))
    captions = CaptionTable(cached_caption_embeddings(caption_set, tokenizer, encoder, out_dir / CAPTIONS_NAME, progress,
                                                      with_tokens=gpt.uses_text_tokens))  # fmt: skip
    if gpt.config.max_codes < tokens["train"].codes.shape[1]:
        raise ValueError(f"the GPT holds {gpt.config.max_codes} codes but clips have up to {tokens['train'].codes.shape[1]}")
    from .batches import CaptionVocabulary, CodeBatches

    vocabulary = CaptionVocabulary(tokens["train"].captions, mirror=gpt_config.mirror_prob > 0)
    train_captions = captions.subset(vocabulary.captions)  # rows in vocabulary order: CodeBatches' caption_ids
    num_sequences = len(tokens["train"].lengths)

    def batches(**kwargs: Any) -> CodeBatches:
        return CodeBatches(tokens["train"], gpt.pad_token_id, mirror_prob=gpt_config.mirror_prob,
                           token_drop_prob=gpt_config.token_drop_prob, min_codes=MIN_CODES, vocabulary=vocabulary, **kwargs)  # fmt: skip

    normalizer = MotionNormalizer.from_stats(stats)
    monitor = GPTMonitor(out_dir, gpt_config, tokens.get(held), captions, vqvae, normalizer, tokenizer, encoder, held)
    logger.info("t2m-gpt: %d training sequences (+ mirrors), %d captions, %.2f M parameters", num_sequences,
                num_train_captions, sum(p.numel() for p in gpt.parameters()) / 1e6)  # fmt: skip
    gpt_started = time.perf_counter()
    result = run_training(
        gpt, None, None, gpt_loss_fn(train_captions, gpt_config.corruption_prob), gpt_config.loop_config(), out_dir,
        name="gpt", on_step=monitor if gpt_config.sample_every else None, every=gpt_config.sample_every, resume=resume,
        progress=progress, batches=batches, graph_safe=True,
    )  # fmt: skip
    gpt_seconds = time.perf_counter() - gpt_started
    pipe = Express4DT2MGPTPipeline(vqvae=vqvae.to("cpu").eval(), transformer=result.model.to("cpu").eval(),
                                   text_encoder=encoder.to("cpu"), tokenizer=tokenizer, normalizer=normalizer.to("cpu"))  # fmt: skip

    if _process_state().is_main_process:
        held_out = monitor.held_out(pipe.transformer)
        vq_meta = _read_json(Path(vq_source) / METADATA_NAME)
        recon = vq_meta.get("reconstruction_test")
        if recon is None and "test" in splits and len(splits["test"]):  # a tokenizer folder without it: measure here
            recon = reconstruction_error(vqvae, MotionDataset(splits["test"], stats, train=False))
        data_name = str(data) if data is not None else "procedural corpus"
        final_loss = _last(result.losses, "loss")
        pipe.card_data = {
            "model_name": f"Express4D T2M-GPT baseline ({gpt_config.model_preset})",
            "preset": f"VQ-VAE {vq_config.model_preset if vqvae_dir is None else 'from ' + vq_source}, GPT {gpt_config.model_preset}",
            "text_encoder": gpt_config.text_encoder or f"sentence-transformers/{DEFAULT_TEXT_ENCODER}",
            "training_data": f"{data_name}: {num_sequences} training clips tokenised with their mirrors, {num_train_captions} "
            "distinct training captions (mirrors included)" + (" — the synthetic procedural corpus, not the real capture" if data is None else ""),
            "training": _training_text(vq_config if vqvae_dir is None else None, vq_meta, gpt_config, final_loss, held_out),
            "reconstruction": f"MSE {recon['mse']:.4f}, L1 {recon['l1']:.4f} on {recon['clips']} test clips" if recon else "not measured",
            "hardware": run_metadata(gpt_config)["hardware"],
            "dataset": training_data_card(data),  # licence, datasets: and model-index of the card (pipelines/cards.py)
        }  # fmt: skip
        save_pipeline_folder(pipe, out_dir)
        _plot_curves(out_dir / "gpt_losses.jsonl", {"gpt_loss.png": ("T2M-GPT token cross-entropy", ["loss", "val_loss"])})
        write_json(out_dir / METADATA_NAME, run_metadata(
            {"vqvae": _config_dict(vq_config) if vqvae_dir is None else {"from": vq_source}, "gpt": _config_dict(gpt_config)},
            data=data_name, train_clips=num_sequences, captions=num_train_captions, vqvae_seconds=round(vq_seconds, 1),
            vqvae_samples_per_s=vq_meta.get("samples_per_s"), gpt_seconds=round(gpt_seconds, 1),
            gpt_loop_seconds=round(result.seconds, 1), gpt_samples_per_s=round(result.samples_per_s, 1),
            total_seconds=round(time.perf_counter() - started, 1), gpt_steps=result.step, final_loss=final_loss,
            held_out={**held_out, "split": held} if held_out else held_out, reconstruction_test=recon, codebook=vqvae.codebook_usage(),
            parameters={"vqvae": sum(p.numel() for p in vqvae.parameters()), "gpt": sum(p.numel() for p in pipe.transformer.parameters())},
        ))  # fmt: skip
    _process_state().wait_for_everyone()
    return pipe


def _training_text(vq_config, vq_meta: dict, gpt_config: GPTTrainConfig, final_loss, held_out: dict) -> str:
    parts = []
    if vq_config is not None:
        parts.append(f"VQ-VAE {vq_config.max_steps} steps, batch {vq_config.batch_size} x {vq_config.window_frames}-frame "
                     f"windows, AdamW lr {vq_config.learning_rate:g} (cosine)")  # fmt: skip
    loss = f"; final loss {final_loss:.3f}" if final_loss is not None else ""
    val = f", held-out {held_out['val_loss']:.3f}" if held_out.get("val_loss") is not None else ""
    parts.append(f"GPT {gpt_config.max_steps} steps, batch {gpt_config.batch_size}, AdamW lr {gpt_config.learning_rate:g} "
                 f"(cosine), EMA {gpt_config.ema_decay}, corruption tau {gpt_config.corruption_prob}, "
                 f"seed {gpt_config.seed}{loss}{val}")  # fmt: skip
    return "; ".join(parts)


def _config_dict(config) -> dict:
    return run_metadata(config)["config"]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _last(records: list[dict[str, float]], key: str) -> float | None:
    return next((r[key] for r in reversed(records) if key in r), None)


def _plot_curves(log_path: Path, figures: dict[str, tuple[str, list[str]]]) -> None:
    """Redraw a run's curves, one PNG per group of keys (training losses and on_step metrics apart)."""
    if not log_path.is_file():
        return
    for png, (title, keys) in figures.items():
        log = LossLog(log_path)
        log.records = [{"step": r["step"], **{k: r[k] for k in keys if k in r}} for r in log.records if any(k in r for k in keys)]
        log.plot(log_path.parent / png, title)


# --- optional: score the trained pipeline --------------------------------------------------------------------

