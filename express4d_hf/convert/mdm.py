"""Convert the released Express4D MDM checkpoint into an :class:`Express4DMDMPipeline` folder.

What the official files hold (jaron1990/Express4D, upstream MDM by Tevet et al.):

- ``model<step>.pt``: a ``torch.save`` of ``{"model": ..., "model_avg": ...}`` when trained with EMA (official
  sampling uses ``model_avg``), or the flat state dict itself. 106 learned tensors for the 8-layer, 512-wide
  model plus two copies of the positional table (``sequence_pos_encoder.pe`` and
  ``embed_timestep.sequence_pos_encoder.pe``, one module registered twice); CLIP's weights are not saved.
- ``args.json`` beside it: ``latent_dim``, ``layers``, ``diffusion_steps``, ``noise_schedule``, ``sigma_small``,
  ``cond_mask_prob``, ``guidance_param``; the rest is fixed for Express4D (feed-forward 1024, 4 heads, dropout 0.1,
  GELU, ``njoints=61``, ``nfeats=1``, CLIP ViT-B/32 text features of width 512).

The network, and how each part maps onto :class:`~express4d_hf.models.mdm.MDMDenoiser`:

==========================================================  ===============================================
official                                                    ours
==========================================================  ===============================================
``input_process.poseEmbedding`` (frames -> latent)          ``input_proj``
``embed_timestep``: ``pe[t]`` (sin in even columns, cos in  ``time_proj`` (diffusers ``Timesteps``: cos then
odd) -> ``time_embed`` Linear-SiLU-Linear                   sin) -> ``time_embedding``; the first layer's
                                                            input columns are permuted to match
``embed_text`` (CLIP feature, zeroed when dropped)          ``text_proj`` (``cond_drop_mask`` zeroes it)
``sequence_pos_encoder`` (added to [cond; frames])          ``positions`` (the same table, not saved)
``seqTransEncoder.layers.i``: post-norm                     ``layers.i`` with ``norm_first=False``:
``self_attn.in_proj`` / ``out_proj``, ``linear1/2``,        ``qkv`` / ``attn_out``, ``ff_in/out``,
``norm1/2``                                                 ``norm1/2``
no final norm (``nn.TransformerEncoder(norm=None)``)        ``final_layer_norm=False``
``output_process.poseFinal``                                ``output_proj``
==========================================================  ===============================================

The official network reads ``[B, 61, 1, T]`` and works sequence-first; ours reads ``[B, T, 61]`` batch-first:
the same arithmetic. Key padding comes from the frame mask and never masks the condition token in both.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.arkit import NUM_CHANNELS
from ..core.constants import MAX_FRAMES, TRAIN_FPS
from ..core.stats import NormStats
from ..core.io import atomic_folder
from ..models.mdm import MDMDenoiser, sinusoidal_positions
from ..models.normalizer import MotionNormalizer
from .common import KeyMapping, OfficialCheckpointError, file_sha256, load_official_torch_file

logger = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # the official `clip_version = 'ViT-B/32'`
WEIGHTS_CHOICES = ("auto", "model_avg", "model")
# Fixed for Express4D in the official `get_model_args`; the rest comes from args.json (or the tensors).
OFFICIAL_FIXED = {"ff_size": 1024, "num_heads": 4, "dropout": 0.1, "activation": "gelu"}
OFFICIAL_ARG_DEFAULTS = {"diffusion_steps": 1000, "noise_schedule": "cosine", "sigma_small": True,
                         "guidance_param": 2.5, "cond_mask_prob": 0.1}  # fmt: skip
BETAS_TOLERANCE = 1e-6


# --- the diffusion schedule ------------------------------------------------------------------------------
def official_betas(schedule: str, steps: int) -> np.ndarray:
    """The official ``get_named_beta_schedule`` in float64 (the reference the scheduler is checked against)."""
    if schedule == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    if schedule == "cosine":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)])
    raise OfficialCheckpointError(f"unknown official noise_schedule {schedule!r} (expected 'cosine' or 'linear')")


def official_scheduler(args: dict[str, Any]):
    """A ``DDPMScheduler`` with the official betas, x0 prediction, no clipping and the official variance.

    diffusers keeps the betas and their cumulative products in float32 where the official code uses float64 (and
    casts each step's coefficients to float32): measured, the betas agree to 2.2e-8 (checked to 1e-6 here),
    ``alphas_cumprod`` to 3.3e-7 absolutely and 1.3e-5 relatively (at t = 999, where it is 2.4e-9), and a whole
    1000-step guided DDPM sample to 6.6e-5 in the normalised space (``bench/measure_official_conversion.py``,
    docs/BENCHMARKS.md). ``sigma_small`` selects the "fixed_small" posterior variance (the official setting).
    """
    from diffusers import DDPMScheduler

    steps = int(args.get("diffusion_steps", 1000))
    schedule = str(args.get("noise_schedule", "cosine"))
    reference = official_betas(schedule, steps)
    kwargs: dict[str, Any] = {}
    if schedule == "cosine":
        kwargs["beta_schedule"] = "squaredcos_cap_v2"
    else:
        kwargs.update(beta_schedule="linear", beta_start=float(reference[0]), beta_end=float(reference[-1]))
    scheduler = DDPMScheduler(
        num_train_timesteps=steps, prediction_type="sample", clip_sample=False,
        variance_type="fixed_small" if args.get("sigma_small", True) else "fixed_large", **kwargs,
    )  # fmt: skip
    error = float(np.abs(scheduler.betas.double().numpy() - reference).max())
    if error > BETAS_TOLERANCE:  # pragma: no cover - a diffusers change would be caught here
        raise OfficialCheckpointError(f"the scheduler's betas differ from the official ones by {error:.2e}")
    return scheduler


# --- the checkpoint ---------------------------------------------------------------------------------------
def read_official_args(checkpoint: str | os.PathLike, args_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``args.json`` next to the checkpoint (or ``args_path``); ``{}`` when there is none."""
    path = Path(args_path) if args_path is not None else Path(checkpoint).expanduser().parent / "args.json"
    if not path.is_file():
        if args_path is not None:
            raise FileNotFoundError(f"{path}: no such args.json")
        return {}
    try:
        args = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OfficialCheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(args, dict):
        raise OfficialCheckpointError(f"{path}: expected a JSON object of training arguments")
    return args


def select_state_dict(payload: Any, weights: str, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to convert: ``model_avg`` (EMA, what official sampling uses) or ``model`` from an EMA
    checkpoint, or the flat state dict itself. ``weights="auto"`` prefers ``model_avg``."""
    if weights not in WEIGHTS_CHOICES:
        raise ValueError(f"--weights {weights!r}: choose one of {', '.join(WEIGHTS_CHOICES)}")
    if not isinstance(payload, dict):
        raise OfficialCheckpointError(f"{source}: holds a {type(payload).__name__}, not a state dict")
    nested = {k for k in ("model", "model_avg") if isinstance(payload.get(k), dict)}
    if not nested:
        if weights == "model_avg":
            raise OfficialCheckpointError(f"{source}: a flat state dict with no 'model_avg' entry; use --weights model")
        return payload, "model"
    choice = ("model_avg" if "model_avg" in nested else "model") if weights == "auto" else weights
    if choice not in nested:
        raise OfficialCheckpointError(f"{source}: no {choice!r} entry (it holds {sorted(nested)})")
    return payload[choice], choice


def _infer_sizes(state: dict[str, torch.Tensor], args: dict[str, Any], source: str, clip_dim: int) -> dict[str, int]:
    """Latent width and layer count from args.json, else from the tensors; the CLIP width from the text encoder."""

    def shape(key: str) -> tuple[int, ...] | None:
        value = state.get(key)
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    pose = shape("input_process.poseEmbedding.weight")
    layer_ids = {
        int(k.split(".")[2]) for k in state if k.startswith("seqTransEncoder.layers.") and k.split(".")[2].isdigit()
    }
    latent = args.get("latent_dim", pose[0] if pose else None)
    layers = args.get("layers", max(layer_ids) + 1 if layer_ids else None)
    if latent is None or layers is None:
        raise OfficialCheckpointError(
            f"{source}: cannot tell the model size (no args.json beside it and no input_process.poseEmbedding / "
            "seqTransEncoder tensors); is this an MDM checkpoint?"
        )
    return {
        "latent": int(latent), "layers": int(layers), "clip_dim": int(clip_dim),
        "channels": int(pose[1]) if pose and len(pose) == 2 else NUM_CHANNELS,
    }  # fmt: skip


def time_embedding_permutation(dim: int) -> torch.Tensor:
    """Column ``j`` of diffusers' ``Timesteps(flip_sin_to_cos=True)`` output is column ``perm[j]`` of the official
    table: cos(f_j) for ``j < dim/2`` (official column ``2j + 1``), sin(f_{j - dim/2}) after (column ``2(j - dim/2)``)."""
    half = dim // 2
    return torch.cat([torch.arange(half) * 2 + 1, torch.arange(half) * 2])


def official_mdm_key_mapping(sizes: dict[str, int], table_length: int | None, source: str) -> KeyMapping:
    d, ff, channels, clip_dim = sizes["latent"], OFFICIAL_FIXED["ff_size"], sizes["channels"], sizes["clip_dim"]
    perm = time_embedding_permutation(d)
    mapping = KeyMapping(source)
    mapping.add("input_process.poseEmbedding.weight", "input_proj.weight", (d, channels))
    mapping.add("input_process.poseEmbedding.bias", "input_proj.bias", (d,))
    for key in ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe"):
        mapping.add(key, None, (table_length or 5000, 1, d))
    mapping.add("embed_timestep.time_embed.0.weight", "time_embedding.linear_1.weight", (d, d), lambda w: w[:, perm])
    mapping.add("embed_timestep.time_embed.0.bias", "time_embedding.linear_1.bias", (d,))
    mapping.add("embed_timestep.time_embed.2.weight", "time_embedding.linear_2.weight", (d, d))
    mapping.add("embed_timestep.time_embed.2.bias", "time_embedding.linear_2.bias", (d,))
    mapping.add("embed_text.weight", "text_proj.weight", (d, clip_dim))
    mapping.add("embed_text.bias", "text_proj.bias", (d,))
    for i in range(sizes["layers"]):
        src, dst = f"seqTransEncoder.layers.{i}.", f"layers.{i}."
        mapping.add(src + "self_attn.in_proj_weight", dst + "qkv.weight", (3 * d, d))
        mapping.add(src + "self_attn.in_proj_bias", dst + "qkv.bias", (3 * d,))
        mapping.add(src + "self_attn.out_proj.weight", dst + "attn_out.weight", (d, d))
        mapping.add(src + "self_attn.out_proj.bias", dst + "attn_out.bias", (d,))
        mapping.add(src + "linear1.weight", dst + "ff_in.weight", (ff, d))
        mapping.add(src + "linear1.bias", dst + "ff_in.bias", (ff,))
        mapping.add(src + "linear2.weight", dst + "ff_out.weight", (d, ff))
        mapping.add(src + "linear2.bias", dst + "ff_out.bias", (d,))
        for norm in ("norm1", "norm2"):
            mapping.add(src + f"{norm}.weight", dst + f"{norm}.weight", (d,))
            mapping.add(src + f"{norm}.bias", dst + f"{norm}.bias", (d,))
    mapping.add("output_process.poseFinal.weight", "output_proj.weight", (channels, d))
    mapping.add("output_process.poseFinal.bias", "output_proj.bias", (channels,))
    return mapping


def official_mdm_to_denoiser(state: dict[str, Any], args: dict[str, Any], source: str = "checkpoint",
                             clip_dim: int = 512) -> MDMDenoiser:  # fmt: skip
    """An :class:`MDMDenoiser` (post-norm, no final norm) holding the official weights; strict.

    ``clip_dim`` is the text feature width (512 for CLIP ViT-B/32's projection).

    Raises:
        OfficialCheckpointError: naming every missing, unexpected or mis-shaped tensor, or a positional table that
            is not the sinusoidal one.
    """
    sizes = _infer_sizes(state, args, source, clip_dim)
    if sizes["channels"] != NUM_CHANNELS:
        raise OfficialCheckpointError(
            f"{source}: the model reads {sizes['channels']} values per frame; Express4D's has {NUM_CHANNELS} "
            "(njoints 61, nfeats 1). This converter handles the Express4D checkpoints only"
        )
    pe = state.get("sequence_pos_encoder.pe")
    table_length = int(pe.shape[0]) if isinstance(pe, torch.Tensor) and pe.ndim == 3 else None
    mapping = official_mdm_key_mapping(sizes, table_length, source)
    ours = mapping.apply(state, ignore_prefixes=("clip_model.",))
    steps = int(args.get("diffusion_steps", OFFICIAL_ARG_DEFAULTS["diffusion_steps"]))
    needed = max(steps, MAX_FRAMES + 1)
    if table_length < needed:
        raise OfficialCheckpointError(f"{source}: positional table of {table_length} rows; {needed} are needed")
    expected = sinusoidal_positions(table_length, sizes["latent"])
    for key in ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe"):
        error = float((state[key].float()[:, 0] - expected).abs().max())
        if error > 1e-4:
            raise OfficialCheckpointError(f"{source}: {key} is not the sinusoidal table (max difference {error:.3g})")
    denoiser = MDMDenoiser(
        num_channels=NUM_CHANNELS, max_frames=MAX_FRAMES, text_dim=sizes["clip_dim"], hidden_size=sizes["latent"],
        num_layers=sizes["layers"], num_heads=OFFICIAL_FIXED["num_heads"], ff_size=OFFICIAL_FIXED["ff_size"],
        dropout=OFFICIAL_FIXED["dropout"], attention_dropout=OFFICIAL_FIXED["dropout"],
        activation=OFFICIAL_FIXED["activation"], num_train_timesteps=steps, frames_per_token=1, output_smoothing=0,
        norm_first=False, final_layer_norm=False,
    )  # fmt: skip
    result = denoiser.load_state_dict(ours, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return denoiser.eval()


# --- the whole pipeline ---------------------------------------------------------------------------------
def convert_official_mdm(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    weights: str = "auto",
    text_encoder: str | None = None,
    stats: NormStats | None = None,
    args_path: str | os.PathLike | None = None,
    text_components: tuple[Any, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert an official MDM checkpoint into a pipeline folder that ``Express4DMDMPipeline.from_pretrained`` loads.

    Args:
        checkpoint: the official ``model<step>.pt``.
        out_dir: the pipeline folder to write (atomically: nothing is written when anything fails).
        weights: ``"model_avg"`` (EMA, what the official sampler uses), ``"model"``, or ``"auto"`` (``model_avg``
            when present).
        text_encoder: CLIP checkpoint (hub id or folder) loaded as ``CLIPTextModelWithProjection``; default
            ``openai/clip-vit-base-patch32`` (the official ``ViT-B/32``).
        stats: the release's normalisation statistics (:func:`~express4d_hf.convert.stats.load_stats_argument`);
            None keeps an identity normaliser, so outputs stay in the normalised space (a warning says so).
        args_path: ``args.json`` when it is not beside the checkpoint.
        text_components: ``(tokenizer, text_encoder)`` already loaded (tests pass a tiny CLIP).
        overwrite: replace an existing ``out_dir``.
    """
    from ..pipelines.mdm import Express4DMDMPipeline
    from ..models.text import CLIP_PROJECTED_POOLING, load_text_encoder, text_pooling

    checkpoint = Path(checkpoint).expanduser()
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    args = read_official_args(checkpoint, args_path)
    payload = load_official_torch_file(checkpoint)
    state, chosen = select_state_dict(payload, weights, str(checkpoint))
    if text_components is None:
        text_components = load_text_encoder(text_encoder or DEFAULT_CLIP, pooling=CLIP_PROJECTED_POOLING)
    tokenizer, encoder = text_components
    if text_pooling(encoder) != CLIP_PROJECTED_POOLING:
        raise ValueError("the official model reads CLIP's projected text features: give a CLIPTextModelWithProjection")
    # embed_text's width is checked against the CLIP projection (512 for the official ViT-B/32)
    denoiser = official_mdm_to_denoiser(state, args, str(checkpoint), clip_dim=int(encoder.config.projection_dim))
    scheduler = official_scheduler({**OFFICIAL_ARG_DEFAULTS, **args})
    if stats is None:
        logger.warning("no --stats: the pipeline keeps an identity normaliser, so its outputs stay in the "
                       "normalised space; pass the release (or its mean/std) to get ARKit values")  # fmt: skip
        normalizer = MotionNormalizer(fps=float(TRAIN_FPS), eps=0.0, source="identity (no --stats given)")
    else:
        normalizer = MotionNormalizer.from_stats(stats, fps=float(TRAIN_FPS), source=str(stats.info.get("source", "")))
    pipe = Express4DMDMPipeline(denoiser=denoiser, scheduler=scheduler, text_encoder=encoder, tokenizer=tokenizer,
                                normalizer=normalizer)  # fmt: skip
    digest = file_sha256(checkpoint)
    guidance = float(args.get("guidance_param", OFFICIAL_ARG_DEFAULTS["guidance_param"]))
    pipe.card_data = {
        "model_name": "Express4D MDM (official weights)",
        "preset": "official",
        "training_data": "the Express4D release (train split), as trained by the authors",
        "training": (
            f"Trained by the Express4D authors (Aloni et al., 2025) and released with the official code "
            f"(github.com/jaron1990/Express4D); these are **their weights**, converted unchanged with "
            f"`express4d convert official-mdm` from `{checkpoint.name}` (sha256 `{digest}`, `{chosen}` weights). "
            f"The converted network equals the official one to 1e-5 (float32). Official sampling: 1000 DDPM "
            f"steps (`num_inference_steps=1000`), guidance {guidance:g}, CLIP ViT-B/32 `encode_text` features."
        ),
        "conversion": {
            "source_file": checkpoint.name,
            "sha256": digest,
            "weights": chosen,
            "args": args,
            "stats": normalizer.config.source,
        },  # fmt: skip
    }
    with atomic_folder(out) as tmp:
        pipe.save_pretrained(tmp)
    return out


__all__ = [
    "DEFAULT_CLIP",
    "convert_official_mdm",
    "official_betas",
    "official_mdm_to_denoiser",
    "official_scheduler",
    "read_official_args",
    "select_state_dict",
    "time_embedding_permutation",
]
