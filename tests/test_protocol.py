"""The replication protocol with a tiny deterministic fake evaluator (express4d_hf.evaluation.protocol)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from express4d_hf import FaceMotion
from express4d_hf.evaluation.protocol import (
    EvaluationResult,
    GeneratorOutputError,
    MotionTextEvaluator,
    clip_seeds,
    evaluate_generator,
    evaluate_motions,
    evaluate_real,
    evaluator_fingerprint,
    format_results_table,
    noise_generator,
    replication_seed,
    summarize,
    text_blind_generator,
)

DIMS = 12  # the fake evaluator looks at the first 12 channels


class ChannelMeanEvaluator:
    """Fake evaluator: a motion's embedding is its per-channel mean (first DIMS channels, at 20 fps);
    a caption's embedding is looked up in a table built from the real clips. Records what it saw."""

    def __init__(self, clips: list[FaceMotion]):
        self.table = {clip.caption: self.motion_features(clip) for clip in clips}  # clips at 20 fps: cheap
        self.seen_lengths: list[list[int]] = []

    @staticmethod
    def motion_features(motion: FaceMotion) -> np.ndarray:
        return motion.resample(20).values[:, :DIMS].mean(axis=0).astype(np.float64)

    def embed_texts(self, captions: list[str]) -> np.ndarray:
        return np.stack([self.table[c] for c in captions])

    def embed_motions(self, motions: list[FaceMotion]) -> np.ndarray:
        self.seen_lengths.append([m.resample(20).num_frames for m in motions])
        return np.stack([self.motion_features(m) for m in motions])


def make_clips(count: int, seed: int, prefix: str, fps: float = 60.0) -> list[FaceMotion]:
    """Clips with a distinct constant 'expression' each plus jitter, 1-5 s long, captioned."""
    clips = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])  # per clip: the same length and level at any fps
        frames = int(rng.integers(1, 6) * fps)
        level = rng.uniform(0, 1, 61)
        values = level + 0.05 * rng.standard_normal((frames, 61))
        clips.append(FaceMotion(values, fps=fps, caption=f"{prefix} clip {i}"))
    return clips


@pytest.fixture(scope="module")
def setup():
    # 20 fps test clips keep the suite fast; test_replications_... uses 60 fps clips like raw Live Link takes.
    test = make_clips(64, seed=0, prefix="test", fps=20.0)
    train = make_clips(80, seed=1, prefix="train", fps=20.0)
    by_caption = {clip.caption: clip for clip in test}

    def perfect(captions, num_frames, seeds):  # the real clip for its caption, at the requested length
        return [by_caption[c].crop(0, n) for c, n in zip(captions, num_frames)]

    return test, train, perfect


def test_fake_evaluator_satisfies_the_protocol(setup):
    test, _, _ = setup
    assert isinstance(ChannelMeanEvaluator(test), MotionTextEvaluator)


def test_perfect_generator_beats_text_blind_and_noise(setup):
    test, train, perfect = setup
    evaluator = ChannelMeanEvaluator(test)
    kwargs = {"replications": 3, "seed": 0, "progress": False}
    good = evaluate_generator(perfect, test, evaluator, **kwargs)
    blind = evaluate_generator(text_blind_generator(train, seed=0), test, evaluator, **kwargs)
    all_train = np.concatenate([c.values for c in train])
    noise = evaluate_generator(noise_generator(all_train.mean(0), all_train.std(0), seed=0), test, evaluator, **kwargs)

    assert good.mean("r_precision_top1") == 1.0 and good.mean("fid") == pytest.approx(0.0, abs=1e-6)
    assert blind.mean("r_precision_top3") < 0.35  # chance is 3/32; far below the perfect generator
    assert good.mean("mm_dist") < blind.mean("mm_dist")
    assert good.mean("fid") < blind.mean("fid") and good.mean("fid") < noise.mean("fid")
    # Noise has the data's marginals but no per-clip structure: its channel means collapse together.
    assert noise.mean("diversity") < 0.5 * good.mean("diversity")


def test_replications_shuffle_order_and_request_real_lengths(setup):
    _, _, perfect = setup
    test = make_clips(64, seed=0, prefix="test", fps=60.0)  # same captions and expressions, 3x the frames
    calls = []

    def recording(captions, num_frames, seeds):
        calls.append((list(captions), list(num_frames), seeds))
        return perfect(captions, num_frames, seeds)

    evaluator = ChannelMeanEvaluator(setup[0])
    result = evaluate_generator(recording, test, evaluator, replications=3, seed=5, progress=False)
    real_length = {c.caption: c.resample(20).num_frames for c in test}
    assert len(calls) == 3
    orders = [tuple(captions) for captions, _, _ in calls]
    assert len(set(orders)) == 3, "each replication must shuffle the clips differently"
    index = {c.caption: i for i, c in enumerate(test)}
    for r, (captions, lengths, seeds) in enumerate(calls):
        assert sorted(captions) == sorted(real_length)
        assert lengths == [real_length[c] for c in captions]  # 20 fps lengths of the 60 fps clips
        # each clip's seed derives from (seed, replication, its index in the test order): one rule everywhere
        assert seeds == clip_seeds(5, r, [index[c] for c in captions])
    assert result.seeds == [replication_seed(5, r) for r in range(3)]
    assert result.info["evaluator"] == evaluator_fingerprint(evaluator)
    assert evaluator.seen_lengths[1] == calls[0][1]  # the evaluator saw generated motions at those lengths


def test_result_structure_and_confidence_interval(setup, tmp_path):
    test, train, _ = setup
    result = evaluate_generator(text_blind_generator(train, 1), test, ChannelMeanEvaluator(test), replications=4,
                                seed=2, progress=False)  # fmt: skip
    data = result.to_dict()
    assert set(data) >= {"metrics", "aits_s", "seeds", "replications"}
    assert set(data["metrics"]) == {"r_precision_top1", "r_precision_top2", "r_precision_top3", "fid", "mm_dist",
                                    "diversity"}  # fmt: skip
    assert data["replications"] == 4 and len(data["seeds"]) == 4 and data["aits_s"] > 0
    for entry in data["metrics"].values():
        values = np.array(entry["values"])
        assert len(values) == 4
        assert entry["mean"] == pytest.approx(values.mean())
        assert entry["ci95"] == pytest.approx(1.96 * values.std(ddof=0) / math.sqrt(4))
    top = [data["metrics"][f"r_precision_top{k}"]["mean"] for k in (1, 2, 3)]
    assert top == sorted(top)
    json.dumps(data)  # JSON-serialisable
    result.save_json(tmp_path / "r.json")
    assert EvaluationResult.load_json(tmp_path / "r.json").to_dict() == json.loads(json.dumps(data))


def test_same_seed_same_numbers_other_seed_other_numbers(setup):
    test, train, _ = setup
    evaluator = ChannelMeanEvaluator(test)

    def run(seed):
        return evaluate_generator(text_blind_generator(train, 0), test, evaluator, replications=2, seed=seed,
                                  progress=False)  # fmt: skip

    a, b, c = run(0), run(0), run(1)
    assert a.values == b.values and a.seeds == b.seeds
    assert a.seeds != c.seeds and a.values["fid"] != c.values["fid"]


def test_generator_outputs_are_checked(setup):
    test, _, perfect = setup
    evaluator = ChannelMeanEvaluator(test)

    def too_short(captions, num_frames, seeds):
        return [FaceMotion(np.zeros((n - 1, 61)), fps=20) for n in num_frames]

    def too_few(captions, num_frames, seeds):
        return perfect(captions, num_frames, seeds)[:-1]

    def too_long_at_40fps(captions, num_frames, seeds):  # 2x frames at 40 fps + 2 s of junk after the end
        motions = [m.resample(40) for m in perfect(captions, num_frames, seeds)]
        return [FaceMotion(np.concatenate([m.values, np.full((80, 61), 50.0)]), fps=40) for m in motions]

    with pytest.raises(GeneratorOutputError, match="honour num_frames"):
        evaluate_generator(too_short, test, evaluator, replications=1, progress=False)
    with pytest.raises(GeneratorOutputError, match="63 motions for 64 captions"):
        evaluate_generator(too_few, test, evaluator, replications=1, progress=False)
    cropped = evaluate_generator(too_long_at_40fps, test, evaluator, replications=1, progress=False)
    assert cropped.mean("r_precision_top1") > 0.9  # the junk past the requested length was cropped away


def test_chunked_generation_and_multimodality(setup):
    test, train, perfect = setup
    evaluator = ChannelMeanEvaluator(test)
    sizes = []

    def counting(captions, num_frames, seeds):
        sizes.append(len(captions))
        return text_blind_generator(train, 0)(captions, num_frames, seeds)

    result = evaluate_generator(counting, test, evaluator, replications=2, batch_size=24, multimodality=True,
                                mm_prompts=5, mm_per_prompt=3, progress=False)  # fmt: skip
    main_calls = [24, 24, 16]
    mm_calls = [5] * 3
    assert sizes == (main_calls + mm_calls) * 2
    assert len(result.values["multimodality"]) == 2 and min(result.values["multimodality"]) > 0
    deterministic = evaluate_generator(perfect, test, evaluator, replications=1, multimodality=True, mm_prompts=5,
                                       mm_per_prompt=3, progress=False)  # fmt: skip
    assert deterministic.values["multimodality"] == [0.0]  # same motion whatever the seed


def test_input_validation(setup):
    test, _, perfect = setup
    evaluator = ChannelMeanEvaluator(test)
    with pytest.raises(ValueError, match="at least one group of 32"):
        evaluate_generator(perfect, test[:31], evaluator, progress=False)
    with pytest.raises(ValueError, match="has no caption"):
        evaluate_generator(perfect, [c.replace(caption=None) for c in test], evaluator, progress=False)


def test_real_row_uses_half_split_fid(setup):
    test, _, _ = setup
    real = evaluate_real(test, ChannelMeanEvaluator(test), replications=3, seed=0, progress=False)
    assert real.aits_s is None and real.replications == 3
    assert real.values["r_precision_top1"] == [1.0, 1.0, 1.0]
    assert all(v > 0 and np.isfinite(v) for v in real.values["fid"])  # two different halves: not 0
    assert len(set(real.values["fid"])) == 3  # a new split per replication
    assert "multimodality" not in real.values


def test_reference_generators():
    clip = FaceMotion(np.arange(10 * 61, dtype=np.float32).reshape(10, 61), fps=20, caption="x")
    blind = text_blind_generator([clip], seed=0)
    long, short = blind(["a", "b"], [25, 4], [3, 4])
    assert (long.num_frames, short.num_frames) == (25, 4)
    np.testing.assert_array_equal(long.values[10:20], clip.values)  # looped whole frames
    assert short.values[0, 0] % 61 == 0  # a crop starts on a frame boundary
    assert long.caption == "a" and long.fps == 20
    again = blind(["other text", "more", "third"], [7, 4, 9], [9, 4, 5])  # text is ignored; each clip's seed decides
    np.testing.assert_array_equal(again[1].values, short.values)

    mean, std = np.linspace(0, 1, 61), np.linspace(0.1, 0.5, 61)
    (noise,) = noise_generator(mean, std, seed=1)(["a"], [4000], [0])
    np.testing.assert_allclose(noise.values.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(noise.values.std(0), std, rtol=0.06)
    with pytest.raises(ValueError, match="61 values"):
        noise_generator([0.0] * 3, [1.0] * 3)


def test_results_table_and_summary():
    assert summarize([2.0]) == (2.0, 0.0)
    model = EvaluationResult({"r_precision_top1": [0.5, 0.7], "fid": [1.0, 1.0], "diversity": [3.0, 3.0]}, [1, 2], 0.25)
    real = EvaluationResult({"r_precision_top1": [0.9, 0.9], "fid": [0.1, 0.1]}, [1, 2])
    table = format_results_table({"Real": real, "MDM": model})
    lines = table.splitlines()
    assert lines[0] == "| Method | R@1 ↑ | FID ↓ | Diversity → | AITS (s) |"
    assert lines[2] == "| Real | 0.900 ± 0.000 | 0.100 ± 0.000 | – | – |"
    assert lines[3] == "| MDM | 0.600 ± 0.139 | 1.000 ± 0.000 | 3.000 ± 0.000 | 0.250 |"


def test_clip_noise_does_not_depend_on_batch_or_chunk_size(setup):
    """A generator that draws each clip's motion from its own seed gives the same rows at any batch size."""
    test, _, _ = setup
    evaluator = ChannelMeanEvaluator(test)

    def seeded(captions, num_frames, seeds):
        return [FaceMotion(np.random.default_rng(seed).standard_normal((n, 61)), fps=20)
                for n, seed in zip(num_frames, seeds)]  # fmt: skip

    whole = evaluate_generator(seeded, test, evaluator, replications=2, seed=3, progress=False)
    chunked = evaluate_generator(seeded, test, evaluator, replications=2, seed=3, batch_size=5, progress=False)
    assert whole.values == chunked.values


def test_existing_motions_of_the_real_clips_score_like_the_real_row(setup):
    test, train, _ = setup
    evaluator = ChannelMeanEvaluator(test)
    real = evaluate_real(test, evaluator, replications=3, seed=4, progress=False)
    given = evaluate_motions(test, test, evaluator, replications=3, seed=4, progress=False)
    for metric in ("r_precision_top1", "r_precision_top2", "r_precision_top3", "mm_dist"):
        assert given.values[metric] == pytest.approx(real.values[metric])
    assert given.mean("fid") == pytest.approx(0.0, abs=1e-6) and given.aits_s is None
    blind = evaluate_motions(text_blind_generator(train, 0)([c.caption for c in test], [20] * len(test),
                             list(range(len(test)))), test, evaluator, replications=3, progress=False)  # fmt: skip
    assert blind.mean("r_precision_top3") < 0.5 * given.mean("r_precision_top3")


def test_fingerprint_follows_weights_and_config():
    import torch

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert evaluator_fingerprint(a) != evaluator_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert evaluator_fingerprint(a) == evaluator_fingerprint(b) and evaluator_fingerprint(a).startswith("sha256:")
    assert evaluator_fingerprint(object()) == "unidentified"


def test_fingerprint_is_the_same_wherever_a_saved_model_is_loaded_from(tmp_path):
    """diffusers records the load path (``_name_or_path``) and its version in ``config``: not part of the identity."""
    import shutil

    import torch

    from express4d_hf.models.mdm import MDMDenoiser

    torch.manual_seed(0)
    model = MDMDenoiser.from_preset("tiny")
    model.save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    first, second = MDMDenoiser.from_pretrained(tmp_path / "a"), MDMDenoiser.from_pretrained(tmp_path / "elsewhere" / "b")
    assert first.config._name_or_path != second.config._name_or_path
    assert evaluator_fingerprint(first) == evaluator_fingerprint(second) == evaluator_fingerprint(model)
    with torch.no_grad():
        next(second.parameters()).view(-1)[0] += 1e-3
    assert evaluator_fingerprint(second) != evaluator_fingerprint(first)


def test_release_pos_tokens_reach_an_evaluator_that_reads_them(setup):
    """The official GloVe + POS text branch needs each caption's word/POS tokens from the release."""
    test, _, _ = setup

    class TaggedEvaluator(ChannelMeanEvaluator):
        def embed_texts(self, captions, tokens=None):
            self.tokens = tokens
            return super().embed_texts(captions)

    evaluator = TaggedEvaluator(test)
    tagged = [clip.replace(metadata={"pos_tokens": f"{clip.caption.split()[-1]}/NUM"}) for clip in test]
    evaluate_real(tagged, evaluator, replications=1, progress=False)
    assert evaluator.tokens == [f"{clip.caption.split()[-1]}/NUM" for clip in test]
    evaluate_real(test, evaluator, replications=1, progress=False)  # untagged clips: the evaluator tags itself
    assert evaluator.tokens is None
