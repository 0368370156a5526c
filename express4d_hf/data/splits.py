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
