"""TextMotionEvaluator (models/evaluator.py) and its trainer (training/evaluator.py)."""

from __future__ import annotations

import json
import os
from dataclasses import replace


import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy

from express4d_hf.core.arkit import CHANNEL_INDEX, NUM_CHANNELS
from express4d_hf.core.stats import NormStats
from express4d_hf.livelink import FaceMotion
from express4d_hf.models.evaluator import REFERENCE_NAME, STATS_NAME, TOKENIZER_DIR, TextMotionEvaluator
from express4d_hf.training.evaluator import (
    EvaluatorTrainConfig,
    TextMotionPair,
    contrastive_loss,
    contrastive_loss_fn,
    draw_shifts,
    negative_pairs,
    split_validation,
)

SMALL = {
    "movement_hidden": 16,
    "movement_dim": 16,
    "motion_hidden": 16,
    "text_hidden": 16,
    "out_dim": 24,
    "dropout": 0.0,
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this file runs its tiny models on one thread."""


@pytest.fixture(scope="module")
def stats() -> NormStats:
    rng = np.random.default_rng(0)
    return NormStats.compute([rng.random((200, NUM_CHANNELS)).astype(np.float32)])


@pytest.fixture()
def evaluator(stats) -> TextMotionEvaluator:
    torch.manual_seed(0)
    return TextMotionEvaluator.from_text_encoder("tiny", stats=stats, **SMALL).eval()


def random_motion(frames: int, fps: float = 60.0, seed: int = 0) -> FaceMotion:
    return FaceMotion(np.random.default_rng(seed).random((frames, NUM_CHANNELS)).astype(np.float32), fps=fps)


# --- model -------------------------------------------------------------------------------------------------
def test_shapes(evaluator):
    motion = torch.randn(3, 196, NUM_CHANNELS)
    assert evaluator.encode_motion(motion, torch.tensor([196, 50, 7])).shape == (3, 24)
    ids, lengths = evaluator.tokenize(["A person is smiling", "A person squints their left eye and then frowns"])
    assert evaluator.encode_text(ids, lengths).shape == (2, 24)
    assert evaluator.embed_texts(["smile", "frown", "a wink"]).shape == (3, 24)
    motions = [random_motion(n, seed=n) for n in (30, 300, 900)]  # 900 frames at 60 fps: cropped to 196 at 20 fps
    emb = evaluator.embed_motions(motions)
    assert emb.shape == (3, 24) and emb.dtype == np.float32 and np.isfinite(emb).all()
    prepared, lengths = evaluator.prepare_motions(motions)
    assert prepared.shape == (3, 196, NUM_CHANNELS) and lengths.tolist() == [10, 100, 196]
    assert TextMotionEvaluator.preset_config("paper")["motion_hidden"] == 1024


def test_face_words_have_word_pieces(evaluator):
    tokenizer = evaluator.tokenizer
    for word in ("squint", "sneer", "pucker", "frown", "smirk", "pout", "grimace", "furrow", "scowl", "eyebrow"):
        ids, lengths = evaluator.tokenize([f"A person is trying to {word}"])
        pieces = ids[0, : lengths[0]].tolist()
        assert tokenizer.unk_token_id not in pieces, word
        word_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert word_ids and set(word_ids) <= set(pieces)
        # Every piece has a real (non-zero) static vector in the frozen table.
        assert all(float(evaluator.word_table[i].abs().sum()) > 0 for i in word_ids), word
    assert not evaluator.word_table.requires_grad
    # Different face words embed differently (no collapse onto one "unknown" vector).
    emb = evaluator.embed_texts(["A person squints", "A person sneers", "A person puckers"])
    assert np.linalg.norm(emb[0] - emb[1]) > 1e-4 and np.linalg.norm(emb[1] - emb[2]) > 1e-4


def test_padding_is_ignored(evaluator):
    torch.manual_seed(1)
    clip = torch.randn(1, 196, NUM_CHANNELS)
    lengths = torch.tensor([61])
    garbage = clip.clone()
    garbage[:, 61:] = 1e3 * torch.randn(1, 135, NUM_CHANNELS)
    assert torch.equal(evaluator.encode_motion(clip, lengths), evaluator.encode_motion(garbage, lengths))
    # Through the numpy API: a clip alone, in a batch, and a clip whose tail past 196 frames is garbage.
    short, other = random_motion(150, seed=1), random_motion(500, seed=2)
    alone = evaluator.embed_motions([short])
    np.testing.assert_allclose(evaluator.embed_motions([other, short])[1], alone[0], rtol=1e-5, atol=1e-5)
    long = random_motion(196, fps=20, seed=3)  # at the evaluator's rate: no resampling filter mixes frames
    tail = np.concatenate([long.values, 50 * np.ones((300, NUM_CHANNELS), np.float32)])
    np.testing.assert_allclose(
        evaluator.embed_motions([FaceMotion(tail, fps=20)]), evaluator.embed_motions([long]), rtol=1e-5, atol=1e-5
    )


def test_save_load_round_trip_is_exact(evaluator, tmp_path):
    for p in evaluator.parameters():  # non-trivial weights everywhere
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    motions = [random_motion(n, seed=n) for n in (100, 250, 400, 700)]
    captions = ["A person squints", "A person sneers", "A person puckers their lips", "A person winks the left eye"]
    motion_emb, text_emb = evaluator.embed_motions(motions), evaluator.embed_texts(captions)
    evaluator.set_reference(motion_emb)
    evaluator.save_pretrained(tmp_path / "ev")
    assert {"config.json", STATS_NAME, REFERENCE_NAME, TOKENIZER_DIR} <= set(os.listdir(tmp_path / "ev"))

    loaded = TextMotionEvaluator.from_pretrained(tmp_path / "ev")
    assert not loaded.training and not loaded.word_table.requires_grad
    for (name, a), (_, b) in zip(evaluator.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert np.array_equal(loaded.stats.mean, evaluator.stats.mean) and np.array_equal(
        loaded.stats.std, evaluator.stats.std
    )
    mu, sigma = loaded.real_stats
    assert mu.dtype == np.float64 and sigma.shape == (24, 24)
    assert np.array_equal(mu, evaluator.real_stats[0]) and np.array_equal(sigma, evaluator.real_stats[1])
    assert np.array_equal(loaded.embed_motions(motions), motion_emb)
    assert np.array_equal(loaded.embed_texts(captions), text_emb)
    assert set(load_numpy(str(tmp_path / "ev" / REFERENCE_NAME))) == {"mu", "sigma"}


# --- contrastive loss ----------------------------------------------------------------------------------------
def test_negatives_never_positive_nor_same_caption():
    rng = np.random.default_rng(0)
    for trial in range(200):
        size = int(rng.integers(1, 12))
        captions = [f"caption {c}" for c in rng.integers(0, 3, size=size)]
        shifts = draw_shifts(size, int(rng.integers(1, 5)), seed=trial)
        assert 0 not in shifts and len(set(shifts)) == len(shifts)
        rows, cols = negative_pairs(captions, shifts)
        assert not (rows == cols).any()
        assert all(captions[r] != captions[c] for r, c in zip(rows.tolist(), cols.tolist()))
    with pytest.raises(ValueError, match="positive"):
        negative_pairs(["a", "b"], [0])
    # A batch where every caption is the same has no negatives at all, so only the positive term remains.
    text, motion = torch.zeros(4, 3), torch.ones(4, 3)
    out = contrastive_loss(text, motion, ["smile"] * 4, [1, 2, 3], margin=10.0)
    assert (
        float(out["negatives"]) == 0
        and float(out["negative"]) == 0
        and float(out["loss"]) == pytest.approx(3.0, rel=1e-4)
    )
    # With distinct captions: positive d² plus max(0, margin - d)² of the shifted pairs.
    text = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    out = contrastive_loss(text, text.clone(), ["a", "b"], [1], margin=10.0)
    assert float(out["positive"]) == pytest.approx(0.0, abs=1e-9) and float(out["negative"]) == pytest.approx(
        36.0, rel=1e-4
    )


def test_validation_split_is_seeded_and_disjoint():
    a_train, a_val = split_validation(100, 0.15, seed=3)
    _, b_val = split_validation(100, 0.15, seed=3)
    assert np.array_equal(a_val, b_val) and len(a_val) == 15 and not set(a_train) & set(a_val)
    assert not np.array_equal(split_validation(100, 0.15, seed=4)[1], a_val)


# --- training ---------------------------------------------------------------------------------------------------
def _two_class_split(num_clips: int, seed: int):
    """An in-memory HF split of two very different classes: broad smiles vs raised brows with an open jaw."""
    import datasets

    from express4d_hf.data.hub import dataset_features

    rng = np.random.default_rng(seed)
    smile = [CHANNEL_INDEX[c] for c in ("MouthSmileLeft", "MouthSmileRight", "CheekSquintLeft", "CheekSquintRight")]
    brows = [
        CHANNEL_INDEX[c]
        for c in ("BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "JawOpen", "EyeWideLeft", "EyeWideRight")
    ]
    rows = {k: [] for k in ("id", "caption", "captions", "tokens", "performer", "fps", "num_frames", "motion", "valid")}
    for k in range(num_clips):
        frames = int(rng.integers(120, 400))
        t = np.linspace(0, 1, frames)
        values = 0.05 * rng.random((frames, NUM_CHANNELS)).astype(np.float32)
        cls = k % 2
        values[:, smile if cls == 0 else brows] += (np.sin(np.pi * t) * rng.uniform(0.6, 1.0))[:, None]
        caption = "A person is smiling broadly" if cls == 0 else "A person raises their eyebrows in surprise"
        for key, value in (("id", f"clip_{k}"), ("caption", caption), ("captions", [caption]), ("tokens", []),
                           ("performer", k % 3), ("fps", 60.0), ("num_frames", frames), ("motion", values),
                           ("valid", [True] * frames)):  # fmt: skip
            rows[key].append(value)
    return datasets.Dataset.from_dict(rows, features=dataset_features())


def test_short_training_separates_two_classes(tmp_path):
    from express4d_hf.data.torch import MotionDataset, collate_motion
    from express4d_hf.evaluation.metrics import r_precision
    from express4d_hf.training.common import LoopConfig, run_training
    from express4d_hf.data.splits import clips_from_split
    from express4d_hf.training.evaluator import MovementAutoencoder, movement_loss_fn

    train_split, test_split = _two_class_split(48, seed=0), _two_class_split(32, seed=1)
    clips = clips_from_split(test_split)
    stats = NormStats.compute([clip.resample(20).values for clip in clips_from_split(train_split)])
    torch.manual_seed(0)
    evaluator = TextMotionEvaluator.from_text_encoder("tiny", stats=stats, **SMALL)
    config = EvaluatorTrainConfig.preset("tiny", batch_size=16, negative_shifts=4)
    dataset = MotionDataset(train_split, stats, train=True, seed=0)

    def embed(model):
        return model.embed_texts([c.caption for c in clips]), model.embed_motions(clips)

    untrained = r_precision(*embed(evaluator), top_k=3, group_size=32)[2]
    loop = LoopConfig(max_steps=20, batch_size=16, learning_rate=3e-3, warmup_steps=2, checkpoint_every=0, log_every=10)
    run_training(MovementAutoencoder(evaluator), dataset, collate_motion, movement_loss_fn(config), loop,
                 tmp_path / "movement", name="movement", progress=False)  # fmt: skip
    result = run_training(TextMotionPair(evaluator), dataset, collate_motion, contrastive_loss_fn(evaluator, config),
                          replace(loop, max_steps=30), tmp_path / "contrastive", name="contrastive", progress=False)  # fmt: skip
    text, motion = embed(result.model.evaluator)
    distance = np.linalg.norm(text[:, None] - motion[None], axis=-1)
    label = np.arange(len(clips)) % 2
    same = label[:, None] == label[None, :]
    # Every text is nearer to the motions of its class than to those of the other class...
    assert (distance.argmin(1) % 2 == label).mean() == 1.0
    assert (np.where(same, distance, -np.inf).max(1) < np.where(~same, distance, np.inf).min(1)).mean() >= 0.9
    # ...so R-precision top-3 is at its ceiling for two captions, 3/16, twice chance (3/32); untrained it is not.
    assert r_precision(text, motion, top_k=3, group_size=32)[2] == pytest.approx(3 / 16)
    assert untrained < 3 / 16


def test_cli_trains_a_loadable_evaluator(tmp_path, capsys):
    from express4d_hf.cli import main
    from express4d_hf.data.hub import build_dataset
    from express4d_hf.data.synthetic import synthesize_release

    release = synthesize_release(tmp_path / "release", num_clips=64, participants=4, seed=0, progress=False, workers=1)
    built = build_dataset(release, tmp_path / "built", progress=False, num_proc=1)
    out = tmp_path / "evaluator"
    code = main(["train", "evaluator", "--data", str(built), "--out", str(out), "--preset", "tiny", "--max-steps", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "validation" in printed and "test" in printed and "R-precision" in printed
    loaded = TextMotionEvaluator.from_pretrained(out)
    assert loaded.stats is not None and loaded.real_stats[0].shape == (loaded.config.out_dim,)
    assert loaded.embed_texts(["A person is smiling"]).shape == (1, loaded.config.out_dim)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"validation", "test", "text_blind_control", "metadata"} <= set(metrics)
    assert metrics["metadata"]["config"]["max_steps"] == 2
    assert not (out / "tmp").exists()
    assert (out / "checkpoints" / "contrastive" / "checkpoints" / "step_2").is_dir()
