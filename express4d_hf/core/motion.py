"""``FaceMotion``: a facial performance as data (61 ARKit channels over time) and its pure transforms.

The core floor of the package: no file I/O here. Reading and writing live in the format and export modules
(:func:`express4d_hf.livelink.read_livelink_csv`, :func:`express4d_hf.livelink.write_livelink_csv`,
:func:`express4d_hf.export.gltf.motion_to_gltf`).

>>> import numpy as np
>>> m = FaceMotion(np.zeros((120, 61), np.float32), fps=60, caption="A person winks with the left eye")
>>> m.resample(20).num_frames, m.mirror().caption
(40, 'A person winks with the right eye')
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from fractions import Fraction
from typing import Any

import numpy as np

from .arkit import CHANNELS, NUM_CHANNELS, mirror_caption, mirror_values, try_canonical_channel_name


# --- timecodes ------------------------------------------------------------------------------------
def format_timecode(frame: int, rate: int, start_frame: int = 0) -> str:
    """``HH:MM:SS:FF.000`` of frame ``start_frame + frame`` at an integer timecode ``rate``."""
    f = start_frame + frame
    ff, s = f % rate, f // rate
    return f"{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}.000"


_TIMECODE_RE = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})[:;](\d{1,3})(?:\.(\d+))?\s*$")


def timecode_to_frames(timecode: str, rate: int) -> int:
    match = _TIMECODE_RE.match(timecode or "")
    if match is None:
        return 0
    h, m, s, ff, _ = match.groups()
    return (int(h) * 3600 + int(m) * 60 + int(s)) * rate + min(int(ff), rate - 1)


@functools.lru_cache(maxsize=32)
def antialias_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR filter ``scipy.signal.resample_poly`` designs for ``up``/``down`` (coprime) by default
    (Kaiser window, beta 5, 10 taps per side per unit of the larger factor), designed once per ratio: the design
    costs about a third of resampling a 10 s clip, and an edit resamples its source on every call. Read-only."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    taps.setflags(write=False)
    return taps


# --- FaceMotion --------------------------------------------------------------------------------------
@dataclasses.dataclass
class FaceMotion:
    """A facial performance: ``values`` is ``[frames, 61]`` float32 in :data:`~express4d_hf.arkit.CHANNELS` order.

    Attributes:
        values: per-frame channel values (blendshapes nominally in [0, 1], rotations in radians).
        fps: frame rate in frames per second.
        start_timecode: timecode of the first frame (``HH:MM:SS:FF.fff``), kept for round trips.
        valid: per-frame bool mask, False where tracking was lost (values there are interpolated or 0).
        caption: the text instruction this motion performs, if any.
        metadata: free-form JSON-serialisable information (source file, performer, notes).
    """

    values: np.ndarray
    fps: float = 60.0
    start_timecode: str = "00:00:00:00.000"
    valid: np.ndarray | None = None
    caption: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != NUM_CHANNELS:
            raise ValueError(f"FaceMotion.values must be [frames, {NUM_CHANNELS}], got shape {values.shape}")
        self.values = np.ascontiguousarray(values)
        if self.fps is None or not float(self.fps) > 0:
            raise ValueError(f"FaceMotion.fps must be positive, got {self.fps!r}")
        self.fps = float(self.fps)
        if self.valid is None:
            self.valid = np.ones(len(values), dtype=bool)
        else:
            self.valid = np.asarray(self.valid, dtype=bool)
            if self.valid.shape != (len(values),):
                raise ValueError(f"FaceMotion.valid must have shape ({len(values)},), got {self.valid.shape}")

    # -- basic properties
    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps

    def __len__(self) -> int:
        return self.num_frames

    def channel(self, name: str) -> np.ndarray:
        """The curve of one channel (any naming style)."""
        canonical = try_canonical_channel_name(name)
        if canonical is None:
            raise KeyError(f"{name!r} is not an ARKit channel")
        return self.values[:, CHANNELS.index(canonical)]

    def replace(self, **changes: Any) -> FaceMotion:
        """A copy with some fields changed (metadata is copied, not shared)."""
        changes.setdefault("metadata", dict(self.metadata))
        return dataclasses.replace(self, **changes)

    # -- transforms
    def resample(self, fps: float) -> FaceMotion:
        """Resample to ``fps`` with an anti-aliasing polyphase filter (not plain frame slicing).

        The valid mask follows the nearest source frame.
        """
        fps = float(fps)
        if math.isclose(fps, self.fps):
            return self.replace()
        ratio = Fraction(fps / self.fps).limit_denominator(1000)
        up, down = ratio.numerator, ratio.denominator
        n_out = max(1, math.ceil(self.num_frames * up / down))
        if self.num_frames < 2:
            values = np.repeat(self.values, n_out, axis=0)
        else:
            from scipy.signal import resample_poly

            # padtype="line" avoids ringing towards zero at the clip edges.
            values = resample_poly(self.values.astype(np.float64), up, down, axis=0, padtype="line",
                                   window=antialias_filter(up, down))[:n_out]  # fmt: skip
        src = np.minimum((np.arange(n_out) * self.fps / fps).round().astype(int), self.num_frames - 1)
        return self.replace(values=values.astype(np.float32), fps=fps, valid=self.valid[src])

    def crop(self, start: int = 0, stop: int | None = None) -> FaceMotion:
        """Frames ``[start, stop)``; the start timecode moves with the crop."""
        stop = self.num_frames if stop is None else stop
        if not 0 <= start < max(stop, 1) or stop > self.num_frames:
            raise ValueError(f"crop [{start}, {stop}) is outside a motion of {self.num_frames} frames")
        timecode = self.start_timecode
        if start:
            rate = int(round(self.fps))
            timecode = format_timecode(start, rate, timecode_to_frames(self.start_timecode, rate))
        return self.replace(values=self.values[start:stop], valid=self.valid[start:stop], start_timecode=timecode)

    def mirror(self) -> FaceMotion:
        """Left/right mirror of the motion and of its caption (whole words)."""
        caption = mirror_caption(self.caption) if self.caption else self.caption
        return self.replace(values=mirror_values(self.values), caption=caption)

    # -- conversions
    def to_numpy(self) -> np.ndarray:
        return self.values

    @classmethod
    def from_numpy(cls, values: np.ndarray, fps: float = 60.0, **kwargs: Any) -> FaceMotion:
        return cls(np.asarray(values, dtype=np.float32), fps=fps, **kwargs)

    def to_torch(self, device: Any = None):
        import torch

        return torch.from_numpy(self.values.copy()).to(device)

    @classmethod
    def from_torch(cls, tensor, fps: float = 60.0, **kwargs: Any) -> FaceMotion:
        return cls(tensor.detach().float().cpu().numpy(), fps=fps, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (values as nested lists, channel names included)."""
        return {
            "fps": self.fps,
            "channels": list(CHANNELS),
            "start_timecode": self.start_timecode,
            "caption": self.caption,
            "metadata": self.metadata,
            "valid": self.valid.tolist(),
            "values": np.round(self.values.astype(np.float64), 6).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceMotion:
        if list(data.get("channels", CHANNELS)) != list(CHANNELS):
            raise ValueError("FaceMotion JSON channels differ from express4d_hf.arkit.CHANNELS")
        return cls(
            np.asarray(data["values"], dtype=np.float32).reshape(-1, NUM_CHANNELS),
            fps=data["fps"],
            start_timecode=data.get("start_timecode", "00:00:00:00.000"),
            valid=np.asarray(data["valid"], dtype=bool) if "valid" in data else None,
            caption=data.get("caption"),
            metadata=data.get("metadata") or {},
        )
