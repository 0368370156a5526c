"""Training batches resident on the training device and drawn by index (see :class:`~.common.BatchSource`).

The ~1k clips of the corpus fit in a few MB, so every clip (and its left/right mirror) is normalised once and
kept on the device as one flat frame table; a batch is a handful of gathers. The augmentation is the recipe of
:class:`~express4d_hf.data.torch.MotionDataset` (a random 0..N leading offset, a random crop to at most
``max_frames``, a random caption line, a mirrored clip and caption with probability ``mirror_prob``) and, for
the VQ-VAE, a random window; every draw of step ``s`` comes from a generator seeded by ``(seed, s, rank)``.
Batches always have the same shapes (padded to ``pad_to`` frames, masked), so a step can be replayed as a
CUDA graph; on a CPU :class:`MotionBatches` may trim the padding to the batch's longest clip instead.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..core.arkit import mirror_caption, mirror_values
from ..core.constants import MAX_FRAMES
from .common import BatchSource


class CaptionVocabulary:
    """Every caption a training run can see (mirrored ones included), each with an index and its mirror's index."""

    def __init__(self, captions_per_item: Sequence[Sequence[str]], mirror: bool = True):
        names: dict[str, int] = {}
        for captions in captions_per_item:
            for caption in captions:
                names.setdefault(caption, len(names))
                if mirror:
                    names.setdefault(mirror_caption(caption), len(names))
        self.captions = list(names)
        self.index = names
        self.mirror_index = torch.tensor([names.get(mirror_caption(c), i) for i, c in enumerate(self.captions)])
        width = max(1, max((len(c) for c in captions_per_item), default=1))
        self.item_captions = torch.zeros(len(captions_per_item), width, dtype=torch.long)
        self.item_counts = torch.ones(len(captions_per_item), dtype=torch.long)
        for i, captions in enumerate(captions_per_item):
            ids = [names[c] for c in captions]
            self.item_captions[i, : len(ids)] = torch.tensor(ids)
            self.item_counts[i] = max(1, len(ids))

    def __len__(self) -> int:
        return len(self.captions)


def _pick(values: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``floor(u * (values + 1))``: a uniform integer in ``[0, values]`` for each ``u`` in ``[0, 1)``."""
    return torch.minimum((u * (values + 1).to(u.dtype)).long(), values)


class MotionBatches(BatchSource):
    """Batches ``motion [B, T, C]``, ``mask [B, T]``, ``lengths [B]``, ``caption_ids [B]`` of a training
    :class:`~express4d_hf.data.torch.MotionDataset`, built on ``device`` from its cached clips.

    Args:
        dataset: a ``MotionDataset(train=True)``: its clips, stats, offset, crop and mirror settings are used.
        vocabulary: caption indices (default: built from the dataset's captions and their mirrors).
        window: crop each sample to a random window of this many frames (VQ-VAE), padding shorter ones.
        pad_to: frames of every batch (default ``window`` or the dataset's ``max_frames``).
        trim_multiple: on a CPU, pad to the batch's longest clip rounded up to this many frames instead
            (fewer frames, the same loss: padding is masked); 0 keeps ``pad_to`` (static shapes).
    """

    def __init__(self, dataset, batch_size: int, *, vocabulary: CaptionVocabulary | None = None, window: int | None = None,
                 pad_to: int | None = None, trim_multiple: int = 0, **kwargs: Any):  # fmt: skip
        super().__init__(len(dataset), batch_size, **kwargs)
        self.vocabulary = vocabulary or CaptionVocabulary(dataset.captions, mirror=dataset.mirror_prob > 0)
        self.window = int(window) if window else None
        self.pad_to = int(pad_to or self.window or dataset.max_frames)
        self.trim_multiple = int(trim_multiple)
        self.max_frames, self.min_frames = int(dataset.max_frames), int(dataset.min_frames)
        self.max_leading_offset = int(dataset.max_leading_offset)
        self.mirror_prob = float(dataset.mirror_prob)
        motions = dataset._motions
        flat = np.concatenate(motions).astype(np.float32)
        table = np.stack([dataset.stats.normalize(flat), dataset.stats.normalize(mirror_values(flat))]).astype(np.float32)
        device = self.device
        self.frames = torch.from_numpy(table).to(device)  # [2, total frames, C]: plain and mirrored, normalised
        lengths = np.array([len(m) for m in motions], dtype=np.int64)
        self.starts = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]])).to(device)
        self.lengths = torch.from_numpy(lengths).to(device)
        self.item_captions = self.vocabulary.item_captions.to(device)
        self.item_counts = self.vocabulary.item_counts.to(device)
        self.mirror_index = self.vocabulary.mirror_index.to(device)
        self.steps = torch.arange(self.pad_to, device=device)

    def gather(self, rows: torch.Tensor, epoch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        rows = rows.to(self.device)
        u = torch.rand(len(rows), 5, device=self.device, generator=generator)
        length = self.lengths[rows]
        offset = _pick(torch.clamp(torch.clamp(length - self.min_frames, min=0), max=self.max_leading_offset), u[:, 0])
        length = length - offset
        crop = _pick(torch.clamp(length - self.max_frames, min=0), u[:, 1])
        length = torch.clamp(length, max=self.max_frames)
        start = self.starts[rows] + offset + crop
        if self.window is not None:
            shift = _pick(torch.clamp(length - self.window, min=0), u[:, 2])
            start, length = start + shift, torch.clamp(length, max=self.window)
        caption = self.item_captions[rows, _pick(self.item_counts[rows] - 1, u[:, 3])]
        mirrored = u[:, 4] < self.mirror_prob
        caption = torch.where(mirrored, self.mirror_index[caption], caption)
        frames = self.pad_to
        if self.trim_multiple and self.device.type == "cpu":
            longest = int(length.max())
            frames = min(self.pad_to, -(-longest // self.trim_multiple) * self.trim_multiple)
        steps = self.steps[:frames]
        mask = steps[None, :] < length[:, None]
        index = torch.clamp(start[:, None] + steps[None, :], max=self.frames.shape[1] - 1)
        motion = self.frames[mirrored.long()[:, None], index] * mask[..., None]
        return {"motion": motion, "mask": mask, "lengths": length, "caption_ids": caption}


class CodeBatches(BatchSource):
    """GPT batches ``codes [B, S]`` (padded with ``pad_id``), ``lengths [B]``, ``caption_ids [B]`` from a
    tokenised split (``TokenizedSplit``), drawn on ``device`` with the recipe of T2M-GPT's ``CodeSequences``:
    the mirrored clip's codes and caption with probability ``mirror_prob``, a random caption line, and with
    probability ``token_drop_prob`` the first or the last code dropped (never below ``min_codes``)."""

    def __init__(self, tokens, pad_id: int, batch_size: int, *, mirror_prob: float = 0.5, token_drop_prob: float = 1 / 3,
                 min_codes: int = 1, vocabulary: CaptionVocabulary | None = None, **kwargs: Any):  # fmt: skip
        super().__init__(len(tokens.lengths), batch_size, **kwargs)
        self.vocabulary = vocabulary or CaptionVocabulary(tokens.captions, mirror=mirror_prob > 0)
        device = self.device
        self.codes = torch.stack([tokens.codes, tokens.mirror_codes]).clamp_min(0).to(device)  # [2, N, S]
        self.lengths = tokens.lengths.long().to(device)
        self.pad_id, self.mirror_prob, self.token_drop_prob, self.min_codes = int(pad_id), float(mirror_prob), float(token_drop_prob), int(min_codes)
        self.item_captions = self.vocabulary.item_captions.to(device)
        self.item_counts = self.vocabulary.item_counts.to(device)
        self.mirror_index = self.vocabulary.mirror_index.to(device)
        self.positions = torch.arange(self.codes.shape[2], device=device)

    def gather(self, rows: torch.Tensor, epoch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        rows = rows.to(self.device)
        u = torch.rand(len(rows), 4, device=self.device, generator=generator)
        mirrored = u[:, 0] < self.mirror_prob
        caption = self.item_captions[rows, _pick(self.item_counts[rows] - 1, u[:, 1])]
        caption = torch.where(mirrored, self.mirror_index[caption], caption)
        length = self.lengths[rows]
        drop = (length > self.min_codes) & (u[:, 2] < self.token_drop_prob)
        drop_first = drop & (u[:, 3] < 0.5)
        length = length - drop.long()
        source = torch.clamp(self.positions[None, :] + drop_first.long()[:, None], max=self.codes.shape[2] - 1)
        codes = self.codes[mirrored.long()[:, None], rows[:, None], source]
        codes = torch.where(self.positions[None, :] < length[:, None], codes, self.pad_id)
        return {"codes": codes, "lengths": length, "caption_ids": caption}


def caption_embedding_table(vocabulary: CaptionVocabulary, embeddings: dict[str, torch.Tensor], device) -> torch.Tensor:
    """``[len(vocabulary), D]`` pooled text embeddings in vocabulary order, on ``device``."""
    missing = [c for c in vocabulary.captions if c not in embeddings]
    if missing:
        raise KeyError(f"caption {missing[0]!r} has no precomputed embedding; it is not in the training split")
    return torch.stack([embeddings[c] for c in vocabulary.captions]).float().to(device)


__all__ = ["CaptionVocabulary", "CodeBatches", "MotionBatches", "caption_embedding_table", "MAX_FRAMES"]
