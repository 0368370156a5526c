"""Per-channel normalisation statistics (``stats.json``) that travel with the data and the models.

The official code computed them over train AND test at 60 fps with no epsilon (DESIGN.md defect 1):
here they come from the train split only, at the training frame rate, with a floor on the std so a
flat channel (e.g. head rotation not recorded) normalises to 0 instead of NaN.

>>> import numpy as np
>>> stats = NormStats.compute([np.ones((30, 61), np.float32)])
>>> bool(np.isclose(stats.std.min(), stats.eps)), float(np.abs(stats.normalize(np.ones((2, 61)))).max())
(True, 0.0)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .arkit import CHANNELS, NUM_CHANNELS
from .io import atomic_write_text

DEFAULT_EPS = 1e-2  # std floor: channels flatter than this are treated as (near-)constant


@dataclass
class NormStats:
    """Per-channel mean and std (float32, length 61) with the frame rate they were computed at."""

    mean: np.ndarray
    std: np.ndarray
    fps: float = 20.0
    eps: float = DEFAULT_EPS
    info: dict[str, Any] = field(default_factory=dict)  # e.g. split, num_clips, num_frames

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(NUM_CHANNELS)
        self.std = np.maximum(np.asarray(self.std, dtype=np.float32).reshape(NUM_CHANNELS), self.eps)

    @classmethod
    def compute(cls, motions: Iterable[np.ndarray], fps: float = 20.0, eps: float = DEFAULT_EPS, **info: Any) -> NormStats:
        """Mean and std over all frames of ``motions`` (each ``[T, 61]``), accumulated in float64."""
        total, sq, count = np.zeros(NUM_CHANNELS), np.zeros(NUM_CHANNELS), 0
        for m in motions:
            m = np.asarray(m, dtype=np.float64)
            total += m.sum(0)
            sq += (m * m).sum(0)
            count += len(m)
        if count == 0:
            raise ValueError("cannot compute normalisation stats from zero frames")
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
        return cls(mean, std, fps=fps, eps=eps, info={"num_frames": count, **info})

    def normalize(self, values):
        """``(values - mean) / std``; works on numpy arrays and torch tensors ``[..., 61]``."""
        mean, std = self._like(values)
        return (values - mean) / std

    def denormalize(self, values):
        mean, std = self._like(values)
        return values * std + mean

    def _like(self, values):
        if isinstance(values, np.ndarray):
            return self.mean.astype(values.dtype, copy=False), self.std.astype(values.dtype, copy=False)
        import torch

        return (torch.as_tensor(self.mean, dtype=values.dtype, device=values.device),
                torch.as_tensor(self.std, dtype=values.dtype, device=values.device))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": list(CHANNELS),
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
            "fps": self.fps,
            "eps": self.eps,
            **self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "stats") -> NormStats:
        for key in ("mean", "std"):
            if key not in data or len(data[key]) != NUM_CHANNELS:
                raise ValueError(f"{source}: field {key!r} must be a list of {NUM_CHANNELS} numbers")
        if list(data.get("channels", CHANNELS)) != list(CHANNELS):
            raise ValueError(f"{source}: 'channels' differ from express4d_hf.arkit.CHANNELS order")
        info = {k: v for k, v in data.items() if k not in ("channels", "mean", "std", "fps", "eps")}
        return cls(data["mean"], data["std"], fps=data.get("fps", 20.0), eps=data.get("eps", DEFAULT_EPS), info=info)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> NormStats:
        path = Path(path)
        if path.is_dir():
            path = path / "stats.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no stats.json (build the dataset with `express4d data build`)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, source=str(path))
