"""The official release's normalisation statistics, kept apart from :class:`NormStats`' std floor.

The official code normalises with the mean and std of **every frame of every take** (train and test) at the
60 fps capture rate, ``np.std`` (ddof 0) and no epsilon (DESIGN.md, defect 1). A converted official model must
use exactly those numbers, so here they are computed the same way and stored with ``eps=0`` (no floor), with
``fps=60`` recording the rate they were computed at; the pipeline's output rate (20 fps) is a separate field
of :class:`~express4d_hf.models.normalizer.MotionNormalizer`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..core.arkit import CHANNELS, NUM_CHANNELS
from ..core.constants import CAPTURE_FPS
from ..core.stats import NormStats

logger = logging.getLogger(__name__)

OFFICIAL_STATS_NOTE = "official: every take (train + test) at 60 fps, np.std (ddof 0), no epsilon"


def _stats_from_arrays(arrays, source: str, fps: float) -> NormStats:
    total, sq, count = np.zeros(NUM_CHANNELS), np.zeros(NUM_CHANNELS), 0
    for values in arrays:
        values = np.asarray(values, np.float64)
        total += values.sum(0)
        sq += (values * values).sum(0)
        count += len(values)
    if count == 0:
        raise ValueError(f"{source}: no frames to compute the release statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    return _checked(mean, std, source, fps, {"num_frames": int(count)})


def _checked(mean, std, source: str, fps: float, info: dict) -> NormStats:
    mean, std = np.asarray(mean, np.float64).reshape(-1), np.asarray(std, np.float64).reshape(-1)
    if mean.shape != (NUM_CHANNELS,) or std.shape != (NUM_CHANNELS,):
        raise ValueError(
            f"{source}: mean and std must hold {NUM_CHANNELS} values each, got {mean.shape} and {std.shape}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError(f"{source}: the statistics hold NaN or infinite values")
    flat = [CHANNELS[i] for i in np.flatnonzero(std <= 0)]
    if flat:
        raise ValueError(
            f"{source}: channel(s) {', '.join(flat)} have zero std; the official code would divide by zero (NaN). "
            "Use the release the model was trained on, or our floored stats (a stats.json from `express4d data build`)"
        )
    return NormStats(mean, std, fps=fps, eps=0.0, info={"source": source, "computed": OFFICIAL_STATS_NOTE, **info})


def official_release_stats(data: str | os.PathLike, progress: bool = False) -> NormStats:
    """The official normalisation statistics of ``data`` (a release folder, a built dataset folder or a Hub id).

    A release folder is read directly (every take of both split files, as stored, 60 fps); a built dataset
    contributes every row of both splits at its stored rate (60 fps for a built release).
    """
    from ..data.release import is_release_dir, load_motion_arrays, read_release

    path = Path(data).expanduser()
    if path.is_dir() and is_release_dir(path):
        release = read_release(path)
        arrays = (load_motion_arrays(take.path)[0] for take in release.takes)
        return _stats_from_arrays(arrays, f"release {path}", float(CAPTURE_FPS))
    from ..data.hub import load_express4d

    splits = load_express4d(data, progress=progress)
    rates = set()

    def arrays():
        for name in splits:
            for row in splits[name].with_format("numpy"):
                rates.add(float(row["fps"]))
                yield row["motion"]

    stats = _stats_from_arrays(arrays(), f"dataset {data}", float(CAPTURE_FPS))
    if rates != {float(CAPTURE_FPS)}:
        logger.warning(
            "%s: clips stored at %s fps; the official stats are computed at %d fps", data, sorted(rates), CAPTURE_FPS
        )
        stats.fps = float(min(rates))
    return stats


def load_stats_argument(spec: str | os.PathLike, progress: bool = False) -> NormStats:
    """``--stats``: a release / built dataset / Hub id (official statistics computed from it), a ``stats.json``
    (:class:`NormStats` as saved, used exactly: no floor is added), or ``MEAN.npy,STD.npy``."""
    text = str(spec)
    if "," in text:
        paths = [Path(p.strip()).expanduser() for p in text.split(",")]
        if len(paths) != 2 or not all(p.suffix == ".npy" for p in paths):
            raise ValueError(f"--stats {text!r}: expected MEAN.npy,STD.npy")
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such file")
        mean, std = (np.load(p, allow_pickle=False) for p in paths)
        return _checked(mean, std, f"{paths[0].name},{paths[1].name}", float(CAPTURE_FPS), {})
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".json":
        data = json.loads(path.read_text())
        stats = NormStats.from_dict({**data, "eps": data.get("eps", 0.0)}, source=str(path))
        return stats
    return official_release_stats(spec, progress=progress)
