"""MotionDataset and collate_motion: 20 fps items, drops, crops, determinism, consistent mirroring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from express4d_hf.core.arkit import CHANNEL_INDEX, CHANNELS
from express4d_hf.data.hub import dataset_features
from express4d_hf.core.stats import NormStats
from express4d_hf.data.torch import MotionDataset, collate_motion
from express4d_hf.livelink import FaceMotion

BLINK_L, BLINK_R = CHANNEL_INDEX["EyeBlinkLeft"], CHANNEL_INDEX["EyeBlinkRight"]
FRAMES_60 = {"short": 45, "a": 150, "b": 240, "long": 900}  # 45 -> 15 frames at 20 fps (dropped); 900 -> 300


def _split():
    rng = np.random.default_rng(0)
    rows = []
    for name, frames in FRAMES_60.items():
        values = (rng.random((frames, len(CHANNELS))) * 0.2).astype(np.float32)
        values[:, BLINK_L] = 0.9  # the left eye is closed, the right one open
        values[:, BLINK_R] = 0.05
        captions = ["A person closes their left eye", "Someone winks with the left eye"]
        rows.append(dict(id=name, caption=captions[0], captions=captions, tokens=["", ""], performer=0, fps=60.0,
                         num_frames=frames, motion=values, valid=np.ones(frames, bool)))  # fmt: skip
    return Dataset.from_list(rows, features=dataset_features())


@pytest.fixture(scope="module")
def split():
    return _split()


@pytest.fixture(scope="module")
def stats(split):
    return NormStats.compute([FaceMotion(np.asarray(m), fps=60).resample(20).values for m in split["motion"]])


def test_preprocessing_resamples_drops_short_and_crops(split, stats):
    ds = MotionDataset(split, stats, train=False)
    assert ds.ids == ["a", "b", "long"] and ds.dropped_ids == ["short"]
    assert ds.lengths.tolist() == [50, 80, 196]
    expected = FaceMotion(np.asarray(split[2]["motion"]), fps=60).resample(20).values  # clip "b"
    np.testing.assert_allclose(ds.raw_motions[1], expected, atol=1e-6)
    item = ds[2]
    assert item["motion"].dtype == torch.float32 and item["motion"].shape == (196, 61) and item["length"] == 196
    assert item["caption"] == "A person closes their left eye" and item["id"] == "long"
    np.testing.assert_allclose(stats.denormalize(item["motion"].numpy()), ds.raw_motions[2], atol=1e-5)
    assert torch.equal(ds[0]["motion"], ds[0]["motion"])  # eval items are deterministic


def test_training_items_offset_crop_and_are_deterministic(split, stats):
    ds = MotionDataset(split, stats, train=True, seed=3, mirror_prob=0.0)
    again = MotionDataset(split, stats, train=True, seed=3, mirror_prob=0.0)
    lengths = [ds[0]["length"] for _ in range(3)]
    assert len(set(lengths)) == 1 and 40 <= lengths[0] <= 50  # 0..10 leading frames dropped
    assert all(torch.equal(ds[i]["motion"], again[i]["motion"]) for i in range(len(ds)))
    assert ds[2]["length"] == 196  # the 300-frame clip is randomly cropped
    draws = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.add((ds[0]["length"], ds[2]["motion"][0, 0].item(), ds[1]["caption"]))
    assert len(draws) > 1  # epochs change offsets, crops and caption choice
    other_seed = MotionDataset(split, stats, train=True, seed=4, mirror_prob=0.0)
    assert any(not torch.equal(ds[i]["motion"], other_seed[i]["motion"]) for i in range(len(ds)))


def test_dataloader_workers_give_the_same_batches(split, stats):
    ds = MotionDataset(split, stats, train=True, seed=1)

    def batches(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate_motion)
        return list(loader)

    single, multi = batches(0), batches(2)
    for a, b in zip(single, multi):
        assert torch.equal(a["motion"], b["motion"]) and a["captions"] == b["captions"]


def test_mirror_swaps_caption_and_channels_together(split, stats):
    ds = MotionDataset(split, stats, train=True, mirror_prob=1.0)
    plain = MotionDataset(split, stats, train=True, mirror_prob=0.0)
    item, reference = ds[1], plain[1]
    assert "right" in item["caption"] and "left" not in item["caption"]
    assert "left" in reference["caption"]
    values = stats.denormalize(item["motion"].numpy())
    assert values[:, BLINK_R].mean() > 0.85 and values[:, BLINK_L].mean() < 0.1
    np.testing.assert_allclose(values[:, BLINK_R], stats.denormalize(reference["motion"].numpy())[:, BLINK_L], atol=1e-5)


def test_collate_pads_to_196_with_mask(split, stats):
    ds = MotionDataset(split, stats, train=False)
    batch = collate_motion([ds[i] for i in range(len(ds))])
    assert batch["motion"].shape == (3, 196, 61) and batch["mask"].shape == (3, 196)
    assert batch["mask"].dtype == torch.bool and batch["lengths"].tolist() == [50, 80, 196]
    assert batch["mask"].sum(1).tolist() == [50, 80, 196]
    assert batch["motion"][0, 50:].abs().sum() == 0 and batch["motion"][0, :50].abs().sum() > 0
    assert batch["captions"][0].startswith("A person") and batch["ids"] == ["a", "b", "long"]
    with pytest.raises(ValueError, match="max_frames=40"):
        collate_motion([ds[0]], max_frames=40)


def test_stats_frame_rate_must_match(split, stats):
    with pytest.raises(ValueError, match="20 fps"):
        MotionDataset(split, stats, train=False, fps=30)
