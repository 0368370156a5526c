"""Rows of a built HF split as :class:`~express4d_hf.core.motion.FaceMotion` clips (what training and scoring read)."""

from __future__ import annotations

import math

import numpy as np

from ..core.constants import MIN_FRAMES, TRAIN_FPS
from ..core.motion import FaceMotion


def clips_from_split(split, min_frames: int = MIN_FRAMES) -> list[FaceMotion]:
    """FaceMotions (caption attached) of the rows of an HF split that last at least ``min_frames`` at 20 fps.

    ``metadata`` holds the take's ``id`` and, when the release gave them, the caption's ``word/POS`` tokens
    (``pos_tokens``), which an evaluator with the official GloVe + POS text branch reads.
    """
    clips = []
    for row in split.with_format("numpy"):
        fps = float(row["fps"])
        if math.ceil(int(row["num_frames"]) * TRAIN_FPS / fps - 1e-9) < min_frames:  # as FaceMotion.resample counts
            continue
        metadata = {"id": str(row["id"])}
        tokens = row.get("tokens")
        if tokens is not None and len(tokens) and str(tokens[0]).strip():  # the first caption's, like "caption"
            metadata["pos_tokens"] = str(tokens[0])
        clips.append(FaceMotion(np.asarray(row["motion"], np.float32), fps=fps, caption=str(row["caption"]),
                                metadata=metadata))  # fmt: skip
    return clips


def split_validation(num_items: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_indices, val_indices)`` of a train split (both sorted); validation gets ``fraction`` of it.

    This is THE validation split of the project (the release has only train and test): the evaluator holds it out
    and selects its checkpoints on it, and ``express4d benchmark --select-checkpoints`` holds the same clips out
    of MDM and T2M-GPT and selects their checkpoints on it (:func:`hold_out_validation`).

    >>> train, val = split_validation(10, 0.2, seed=0)
    >>> len(train), len(val), sorted(set(train) | set(val)) == list(range(10))
    (8, 2, True)
    """
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    num_val = round(num_items * fraction)
    if num_val < 2 or num_items - num_val < 2:
        raise ValueError(f"a train split of {num_items} clips is too small to hold out {fraction:.0%} for validation")
    order = np.random.default_rng([seed, 0x5A11D]).permutation(num_items)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def hold_out_validation(splits, fraction: float, seed: int):
    """``splits`` (a ``DatasetDict``) with ``train`` minus the validation clips of :func:`split_validation` and a
    ``validation`` split holding them; ``test`` is untouched. ``fraction`` 0 returns ``splits`` unchanged."""
    if not fraction:
        return splits
    from datasets import DatasetDict

    train_idx, val_idx = split_validation(len(splits["train"]), fraction, seed)
    out = DatasetDict({name: split for name, split in splits.items() if name != "train"})
    out["train"] = splits["train"].select(train_idx)
    out["validation"] = splits["train"].select(val_idx)
    return out
