"""Editing a performance with a motion pipeline: which parts of a source motion to keep, and how.

An edit keeps some channels (a face region, channel names, or a ``[frames, 61]`` mask) and/or some time spans
of a source :class:`~express4d_hf.FaceMotion` and generates the rest from a prompt. This module turns the
user's description of the kept parts into arrays the samplers use:

- :func:`resolve_keep_channels` / :func:`resolve_keep_frames`: the kept mask ``[frames, 61]``, with
  :class:`ValueError`\\ s that list what is valid (regions, channel names, the clip's time range);
- :func:`seam_weights`: the mask softened at its temporal edges: 1 on kept frames, then a raised-cosine
  ramp down to 0 over ``blend_frames`` generated frames, so the generated part is pulled towards the source
  next to a seam and the seam has no jump (kept parts stay exactly the source);
- :func:`prepare_edit`: the source resampled to the pipeline's rate and the weights, for one clip;
- :func:`frame_steps`, :func:`seam_step_report`: how smooth a seam is, measured the way the tests bound
  it (the largest frame-to-frame step at a seam against the 99th percentile of the source's own steps).

Nothing here runs a model; the MDM pipeline applies the weights inside its sampling loop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.arkit import CHANNELS, NUM_CHANNELS, REGIONS, try_canonical_channel_name
from ..core.motion import FaceMotion

DEFAULT_SEAM_BLEND_S = 0.25  # seconds of raised-cosine ramp after (and before) each kept span


def region_names() -> list[str]:
    return list(REGIONS)


def _valid_channels_message() -> str:
    return (f"valid regions: {', '.join(REGIONS)}; or any of the {NUM_CHANNELS} ARKit channel names "
            f"(e.g. {CHANNELS[17]}, {CHANNELS[23]}, {CHANNELS[52]})")  # fmt: skip


def channels_of(names: str | Iterable[str]) -> list[int]:
    """Column indices of region names and/or channel names (any naming style), in order, without repeats.

    >>> channels_of("jaw") == channels_of(["JawForward", "jawRight", "JawLeft", "JawOpen"])
    True
    """
    if isinstance(names, str):
        names = [names]
    out: list[int] = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"a kept channel must be a region or channel name, got {name!r}; {_valid_channels_message()}")
        key = name.strip()
        if key.lower() in REGIONS:
            found = [CHANNELS.index(c) for c in REGIONS[key.lower()]]
        else:
            canonical = try_canonical_channel_name(key)
            if canonical is None:
                raise ValueError(f"unknown region or channel {name!r}; {_valid_channels_message()}")
            found = [CHANNELS.index(canonical)]
        out += [i for i in found if i not in out]
    if not out:
        raise ValueError(f"no channels to keep; {_valid_channels_message()}")
    return out


def resolve_keep_channels(keep_channels, num_frames: int) -> np.ndarray:
    """``[num_frames, 61]`` bool mask of ``keep_channels``: a region or channel name, a list of them, or a bool
    mask ``[num_frames, 61]`` (or ``[61]``, the same every frame). ``None`` keeps nothing."""
    mask = np.zeros((num_frames, NUM_CHANNELS), dtype=bool)
    if keep_channels is None:
        return mask
    if isinstance(keep_channels, str) or (
        isinstance(keep_channels, (list, tuple)) and all(isinstance(k, str) for k in keep_channels)
    ):
        mask[:, channels_of(keep_channels)] = True
        return mask
    array = np.asarray(keep_channels.detach().cpu() if hasattr(keep_channels, "detach") else keep_channels)
    if array.dtype != bool:
        raise ValueError(
            "`keep_channels` must be a region name, a list of region or channel names, or a bool mask "
            f"[frames, {NUM_CHANNELS}]; got an array of {array.dtype}. {_valid_channels_message()}"
        )
    if array.shape == (NUM_CHANNELS,):
        mask[:] = array[None]
        return mask
    if array.ndim != 2 or array.shape[1] != NUM_CHANNELS or array.shape[0] < num_frames:
        raise ValueError(
            f"a `keep_channels` mask must have shape [{num_frames}, {NUM_CHANNELS}] (frames of the output at the "
            f"pipeline's rate, channels) or [{NUM_CHANNELS}]; got {list(array.shape)}"
        )
    return array[:num_frames].copy()


def parse_spans(text: str) -> list[tuple[float, float]]:
    """``"0-1,3-4.5"`` -> ``[(0.0, 1.0), (3.0, 4.5)]`` (seconds; the command line's ``--keep-frames``)."""
    spans = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*[-:]\s*(\d+(?:\.\d*)?|\.\d+)", part)
        if match is None:
            raise ValueError(f"bad time span {part!r}: write START-END in seconds, e.g. 0-1.5,3-4")
        spans.append((float(match.group(1)), float(match.group(2))))
    if not spans:
        raise ValueError("no time spans given: write START-END in seconds, e.g. 0-1.5,3-4")
    return spans


def resolve_keep_frames(keep_frames, source_frames: int, num_frames: int, fps: float) -> np.ndarray:
    """``[num_frames]`` bool mask of the frames inside the ``(start_s, end_s)`` spans of ``keep_frames``.

    A span must lie inside both the source and the output (``0 <= start < end <= min(durations)``); frame ``i``
    (time ``i / fps``) is kept when ``start <= i / fps < end``, rounded to whole frames.
    """
    mask = np.zeros(num_frames, dtype=bool)
    if keep_frames is None:
        return mask
    if isinstance(keep_frames, str):
        keep_frames = parse_spans(keep_frames)
    limit_frames = min(source_frames, num_frames)
    limit = limit_frames / fps
    valid = f"valid spans lie within 0 to {limit:g} s (the {'source' if source_frames <= num_frames else 'output'} is {limit:g} s long)"
    spans = list(keep_frames)
    if not spans:
        raise ValueError(f"`keep_frames` is empty; give (start_s, end_s) spans; {valid}")
    for span in spans:
        try:
            start, end = (float(v) for v in span)
        except (TypeError, ValueError):
            raise ValueError(f"a kept span must be a (start_s, end_s) pair of seconds, got {span!r}; {valid}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start or end > limit + 0.5 / fps:
            raise ValueError(f"kept span ({start:g}, {end:g}) s is outside the clip; {valid}")
        first, stop = int(round(start * fps)), min(int(round(end * fps)), limit_frames)
        if stop <= first:
            raise ValueError(f"kept span ({start:g}, {end:g}) s holds no whole frame at {fps:g} fps; {valid}")
        mask[first:stop] = True
    return mask


def seam_weights(keep: np.ndarray, blend_frames: int) -> np.ndarray:
    """Soft weights ``[T, C]`` of a kept mask ``[T, C]``: 1 where kept, a raised-cosine ramp over the
    ``blend_frames`` frames on either side of each kept run (per channel, along time), 0 beyond.

    >>> w = seam_weights(np.array([True, True, False, False, False, False])[:, None], 3)
    >>> np.round(w[:, 0].astype(float), 3).tolist()
    [1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    keep = np.asarray(keep, dtype=bool)
    weights = keep.astype(np.float32)
    if blend_frames <= 0 or keep.all() or not keep.any():
        return weights
    frames = keep.shape[0]
    index = np.arange(frames)[:, None]
    big = frames + blend_frames + 1
    # Distance (in frames) from each frame to the nearest kept frame of its channel, both directions.
    last = np.where(keep, index, -big)
    last = np.maximum.accumulate(last, axis=0)
    following = np.where(keep, index, 2 * big)
    following = np.minimum.accumulate(following[::-1], axis=0)[::-1]
    distance = np.minimum(index - last, following - index).astype(np.float32)
    ramp = 0.5 * (1.0 + np.cos(np.pi * distance / (blend_frames + 1)))
    return np.where(keep, 1.0, np.where(distance <= blend_frames, ramp, 0.0)).astype(np.float32)


@dataclass
class EditPlan:
    """One clip's edit at the pipeline's rate: ``source`` ``[T, 61]`` raw values (past the source's end, its last
    frame repeated), ``kept`` ``[T, 61]`` bool and ``weights`` ``[T, 61]`` (:func:`seam_weights`)."""

    source: np.ndarray
    kept: np.ndarray
    weights: np.ndarray
    source_frames: int  # frames of the (resampled) source inside the output

    @property
    def seams(self) -> list[int]:
        """Frames ``i`` where the kept mask changes between frame ``i - 1`` and ``i`` on some channel."""
        change = (self.kept[1:] != self.kept[:-1]).any(axis=1)
        return [int(i) + 1 for i in np.flatnonzero(change)]


def source_at(motion: FaceMotion, fps: float) -> np.ndarray:
    """The source's values at ``fps`` (the anti-aliased resampling of :meth:`FaceMotion.resample`)."""
    if not isinstance(motion, FaceMotion):
        raise ValueError(f"`motion` must be a FaceMotion (read one with read_livelink_csv), got {type(motion).__name__}")
    return motion.resample(fps).values


def prepare_edit(
    motion: FaceMotion,
    num_frames: int,
    fps: float,
    keep_channels=None,
    keep_frames: Sequence[tuple[float, float]] | str | None = None,
    seam_blend_s: float = DEFAULT_SEAM_BLEND_S,
) -> EditPlan:
    """The kept mask and seam weights of one clip of ``num_frames`` frames at ``fps`` edited from ``motion``.

    Kept channels apply on the frames the source covers; kept spans on every channel. At least one of the two
    must be given. Frames where the source lost tracking (``motion.valid`` False) are never kept: the model
    generates them. ``seam_blend_s`` (>= 0) is the length of the ramps of :func:`seam_weights`.
    """
    if keep_channels is None and keep_frames is None:
        raise ValueError("an edit needs `keep_channels` (a region, channel names or a mask) and/or `keep_frames` "
                         f"(time spans in seconds); {_valid_channels_message()}")  # fmt: skip
    if not isinstance(seam_blend_s, (int, float)) or not 0.0 <= seam_blend_s <= 2.0:
        raise ValueError(f"`seam_blend_s` must be a number of seconds in [0, 2], got {seam_blend_s!r}")
    if not isinstance(motion, FaceMotion):
        raise ValueError(f"`motion` must be a FaceMotion (read one with read_livelink_csv), got {type(motion).__name__}")
    resampled = motion.resample(fps)
    values = resampled.values
    source_frames = min(len(values), num_frames)
    source = np.empty((num_frames, NUM_CHANNELS), dtype=np.float32)
    source[:source_frames] = values[:source_frames]
    source[source_frames:] = values[source_frames - 1]  # held past the source's end (continuation ramps)
    kept = resolve_keep_channels(keep_channels, num_frames)
    kept[source_frames:] = False  # nothing to keep where the source has ended
    kept |= resolve_keep_frames(keep_frames, len(values), num_frames, fps)[:, None]
    kept[:source_frames] &= resampled.valid[:source_frames, None]  # frames without tracking are generated instead
    weights = seam_weights(kept, int(round(seam_blend_s * fps)))
    return EditPlan(source=source, kept=kept, weights=weights, source_frames=source_frames)


def parse_timeline(text: str, source: str = "the timeline") -> list[tuple[str, float]]:
    """``[(instruction, seconds), ...]`` of a script with one ``SECONDS<TAB>INSTRUCTION`` a line (``#`` comments and
    blank lines skipped; spaces work in place of the tab). Errors name the line.

    >>> parse_timeline("# a scene\\n3\\tA person is smiling\\n2.5  A person frowns\\n")
    [('A person is smiling', 3.0), ('A person frowns', 2.5)]
    """
    segments = []
    for number, line in enumerate((text or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        seconds, _, instruction = line.replace("\t", " ").partition(" ")
        try:
            value = float(seconds)
        except ValueError:
            value = None
        if value is None or not instruction.strip():
            raise ValueError(f"{source}, line {number}: write SECONDS<TAB>INSTRUCTION, e.g. '3<TAB>A person is "
                             f"smiling'; got {line[:60]!r}")  # fmt: skip
        segments.append((instruction.strip(), value))
    if not segments:
        raise ValueError(f"{source} has no 'SECONDS<TAB>INSTRUCTION' lines, e.g. '3<TAB>A person is smiling'")
    return segments


# --- measuring seams ------------------------------------------------------------------------------------
def frame_steps(values: np.ndarray) -> np.ndarray:
    """``[T - 1]``: the largest absolute change over the channels between consecutive frames."""
    values = np.asarray(values, dtype=np.float64)
    return np.abs(np.diff(values, axis=0)).max(axis=1) if len(values) > 1 else np.zeros(0)


def seam_step_report(edited: np.ndarray, reference: np.ndarray, seams: Iterable[int], width: int = 1) -> dict:
    """How smooth the seams of ``edited`` are: ``{"seam_step", "reference_p99", "ratio"}``.

    ``seam_step`` is the largest :func:`frame_steps` value within ``width`` frames of each seam (the steps
    into, at and out of it; give the ramp's length + 1 to cover the whole blended stretch); ``reference_p99`` the 99th percentile of ``reference``'s own steps (the source's,
    or the whole output's for a composed timeline). The acceptance bound is ``ratio <= 2``.
    """
    steps = frame_steps(edited)
    near = [i - 1 + d for i in seams for d in range(-width, width + 1) if 0 <= i - 1 + d < len(steps)]
    seam_step = float(steps[near].max()) if near else 0.0
    p99 = float(np.percentile(frame_steps(reference), 99))
    return {"seam_step": seam_step, "reference_p99": p99, "ratio": seam_step / max(p99, 1e-12)}


__all__ = ["DEFAULT_SEAM_BLEND_S", "EditPlan", "channels_of", "frame_steps", "parse_spans", "prepare_edit",
           "parse_timeline", "region_names", "resolve_keep_channels", "resolve_keep_frames", "seam_step_report", "seam_weights",
           "source_at"]  # fmt: skip
