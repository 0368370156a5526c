"""Flags shared by the verbs that score or sample MDM (``benchmark``, ``evaluate``): one definition each."""

from __future__ import annotations

import argparse

from ..core.constants import DIFFUSION_SAMPLERS
from .arguments import finite_float, non_negative_int, positive_int, unit_float


def add_sampling_arguments(parser: argparse.ArgumentParser, ddpm: bool = False) -> None:
    """``--sampler --steps --guidance-scale --guidance-rescale --eta --fast-sampling`` (defaults None: the caller's)."""
    samplers = DIFFUSION_SAMPLERS if ddpm else DIFFUSION_SAMPLERS[1:]
    parser.add_argument("--sampler", choices=samplers, default=None, help="MDM sampler (default ddim)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="MDM denoising steps (default 50; every training step for ddpm)")  # fmt: skip
    parser.add_argument("--guidance-scale", type=finite_float, default=None, help="MDM classifier-free guidance (default 2.5)")
    parser.add_argument("--guidance-rescale", type=unit_float, default=None,
                        help="MDM guidance rescale, 0..1 (default 0; the paper preset's fast row uses 0.7)")  # fmt: skip
    parser.add_argument("--eta", type=unit_float, default=None, help="DDIM's per-step noise share (default 0)")
    parser.add_argument("--fast-sampling", action=argparse.BooleanOptionalAction, default=None,
                        help="on a GPU, sample MDM in bf16 with replayed CUDA graphs (default: on)")  # fmt: skip


def add_protocol_arguments(parser: argparse.ArgumentParser, replications_help: str, clips_help: str) -> None:
    """``--replications --max-test-clips --multimodality --seed``."""
    parser.add_argument("--replications", type=positive_int, default=None, help=replications_help)
    parser.add_argument("--max-test-clips", type=non_negative_int, default=None, help=clips_help)
    parser.add_argument("--multimodality", action=argparse.BooleanOptionalAction, default=None,
                        help="also compute Multimodality (extra generations)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")

