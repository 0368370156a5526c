"""Torch batches of the Express4D training representation (DESIGN.md, "Training representation").

:class:`MotionDataset` turns one split of the HF dataset into what the models see: 60 -> 20 fps with an
anti-aliasing filter (the official code kept every third frame, which aliases blinks), clips under 20
frames dropped, at most 196 frames, z-normalised with the train-split :class:`~express4d_hf.data.stats.NormStats`.
The resampling happens once, at construction; items only slice, mirror and normalise cached arrays.

Training items lose a random 0..10 leading frames, take a random crop when longer than 196 frames, pick
a random caption line, and are left/right mirrored with probability 0.5: the motion with
:func:`~express4d_hf.arkit.mirror_values` and the caption with :func:`~express4d_hf.arkit.mirror_caption`
(whole words, so "bright" stays "bright"; DESIGN.md defect 4). Every random draw comes from a generator
seeded by ``(seed, epoch, index)``, so an item is the same whichever DataLoader worker builds it; call
:meth:`MotionDataset.set_epoch` each epoch (with ``persistent_workers=False``) for fresh draws.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..core.arkit import NUM_CHANNELS, mirror_caption, mirror_values
from ..core.constants import MAX_FRAMES, MAX_LEADING_OFFSET, MIN_FRAMES, TRAIN_FPS
from ..core.motion import FaceMotion
from ..core.stats import NormStats

logger = logging.getLogger(__name__)


def _columns(hf_split: Any) -> tuple[list[np.ndarray], list[float], list[str], list[list[str]]]:
    """(motions, fps, ids, captions) of a ``datasets.Dataset`` (fast columnar path) or a list of row dicts."""
    if hasattr(hf_split, "with_format") and hasattr(hf_split, "column_names"):
        missing = {"id", "motion", "fps", "captions"} - set(hf_split.column_names)
        if missing:
            raise ValueError(f"the split lacks column(s) {sorted(missing)}; build it with `express4d data build`")
        motions = list(hf_split.with_format("numpy", columns=["motion"])[:]["motion"])
        return motions, list(hf_split["fps"]), list(hf_split["id"]), [list(c) for c in hf_split["captions"]]
    rows = list(hf_split)
    return ([np.asarray(r["motion"], np.float32) for r in rows], [float(r["fps"]) for r in rows],
            [str(r["id"]) for r in rows], [list(r.get("captions") or [r["caption"]]) for r in rows])  # fmt: skip


class MotionDataset(torch.utils.data.Dataset):
    """One split as training/evaluation items ``dict(motion [T, 61], length, caption, id)``.

    Args:
        hf_split: a split of :func:`~express4d_hf.data.hub.load_express4d` (or a list of such rows).
        stats: the train-split normalisation statistics (``dataset_stats(...)``).
        train: random offset, crop, caption choice and mirroring when True; deterministic otherwise
            (first ``max_frames`` frames, first caption).
        fps: frame rate the models see.
        max_frames, min_frames: crop length and the shortest clip kept (at ``fps``).
        max_leading_offset: training items start 0..this many frames late (never leaving fewer than
            ``min_frames``).
        mirror_prob: probability of a left/right mirror of a training item.
        seed: base seed of every random draw.

    Attributes:
        ids, captions: per kept clip.
        raw_motions: the ``fps`` arrays, un-normalised, cropped to the first ``max_frames`` frames.
        lengths: ``len`` of each of ``raw_motions`` (int64 array).
        dropped_ids: clips removed for being shorter than ``min_frames``.
    """

    def __init__(
        self,
        hf_split: Any,
        stats: NormStats,
        *,
        train: bool,
        fps: float = TRAIN_FPS,
        max_frames: int = MAX_FRAMES,
        min_frames: int = MIN_FRAMES,
        max_leading_offset: int = MAX_LEADING_OFFSET,
        mirror_prob: float = 0.5,
        seed: int = 0,
    ):
        if not 0 < min_frames <= max_frames:
            raise ValueError(f"need 0 < min_frames <= max_frames, got {min_frames} and {max_frames}")
        if not 0.0 <= mirror_prob <= 1.0:
            raise ValueError(f"mirror_prob must be in [0, 1], got {mirror_prob}")
        if not np.isclose(stats.fps, fps):
            raise ValueError(f"the stats were computed at {stats.fps:g} fps but items are built at {fps:g} fps")
        self.stats, self.train, self.fps = stats, bool(train), float(fps)
        self.max_frames, self.min_frames = int(max_frames), int(min_frames)
        self.max_leading_offset = max(0, int(max_leading_offset)) if train else 0
        self.mirror_prob = float(mirror_prob) if train else 0.0
        self.seed, self.epoch = int(seed), 0

        motions, source_fps, ids, captions = _columns(hf_split)
        self._motions: list[np.ndarray] = []  # train: full clip at fps (random crops); eval: first max_frames
        self.ids: list[str] = []
        self.captions: list[list[str]] = []
        self.dropped_ids: list[str] = []
        for values, rate, clip_id, clip_captions in zip(motions, source_fps, ids, captions):
            values = np.asarray(values, dtype=np.float32).reshape(-1, NUM_CHANNELS)
            resampled = FaceMotion(values, fps=rate).resample(self.fps).values if len(values) else values
            if len(resampled) < self.min_frames:
                self.dropped_ids.append(str(clip_id))
                continue
            if not clip_captions:
                raise ValueError(f"clip {clip_id!r} has no caption")
            self._motions.append(resampled if self.train else resampled[: self.max_frames].copy())
            self.ids.append(str(clip_id))
            self.captions.append([str(c) for c in clip_captions])
        if self.dropped_ids:
            logger.info("dropped %d clip(s) shorter than %d frames at %g fps: %s", len(self.dropped_ids),
                        self.min_frames, self.fps, ", ".join(self.dropped_ids))  # fmt: skip
        self.raw_motions: list[np.ndarray] = [m[: self.max_frames] for m in self._motions]
        self.lengths = np.array([len(m) for m in self.raw_motions], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._motions)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws of every item (call before each epoch's DataLoader iteration)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        index = index % len(self)
        motion, captions = self._motions[index], self.captions[index]
        caption = captions[0]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            offset = int(rng.integers(0, min(self.max_leading_offset, len(motion) - self.min_frames) + 1))
            motion = motion[offset:]
            if len(motion) > self.max_frames:
                start = int(rng.integers(0, len(motion) - self.max_frames + 1))
                motion = motion[start : start + self.max_frames]
            caption = captions[int(rng.integers(len(captions)))]
            if rng.random() < self.mirror_prob:
                motion, caption = mirror_values(motion), mirror_caption(caption)
        normalised = self.stats.normalize(np.asarray(motion, dtype=np.float32))
        return {
            "motion": torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32)),
            "length": int(len(motion)),
            "caption": caption,
            "id": self.ids[index],
        }

    @classmethod
    def from_express4d(cls, split: str, data: Any = None, cache_dir: Any = None, *, train: bool | None = None,
                       **kwargs: Any) -> MotionDataset:  # fmt: skip
        """A split of :func:`~express4d_hf.data.hub.load_express4d` (``data`` as there) with its shipped stats.

        ``train`` defaults to ``split == "train"``.
        """
        from .hub import dataset_stats, load_express4d

        splits = load_express4d(data, cache_dir)
        if split not in splits:
            raise ValueError(f"no split {split!r}; the dataset has {sorted(splits)}")
        stats = dataset_stats(data, cache_dir)
        return cls(splits[split], stats, train=(split == "train") if train is None else train, **kwargs)


def collate_motion(batch: Sequence[Mapping[str, Any]], max_frames: int = MAX_FRAMES) -> dict[str, Any]:
    """Stack items into ``motion [B, max_frames, 61]`` (zero padded), ``mask [B, max_frames]`` (True on
    real frames), ``lengths`` (LongTensor), ``captions`` and ``ids`` (lists).

    >>> items = [{"motion": torch.ones(3, 61), "length": 3, "caption": "a", "id": "x"}]
    >>> out = collate_motion(items, max_frames=5)
    >>> out["motion"].shape, out["mask"].tolist(), out["lengths"].tolist()
    (torch.Size([1, 5, 61]), [[True, True, True, False, False]], [3])
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    motion = torch.zeros(len(batch), max_frames, NUM_CHANNELS, dtype=torch.float32)
    lengths = torch.zeros(len(batch), dtype=torch.long)
    for i, item in enumerate(batch):
        length = int(item["length"])
        if length > max_frames or item["motion"].shape[0] != length:
            raise ValueError(f"item {item.get('id')!r}: length {length} with motion {tuple(item['motion'].shape)} "
                             f"does not fit max_frames={max_frames}")  # fmt: skip
        motion[i, :length] = item["motion"]
        lengths[i] = length
    mask = torch.arange(max_frames)[None, :] < lengths[:, None]
    return {
        "motion": motion,
        "mask": mask,
        "lengths": lengths,
        "captions": [item["caption"] for item in batch],
        "ids": [item["id"] for item in batch],
    }
