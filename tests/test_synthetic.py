"""The procedural Express4D stand-in: release layout, file validity, determinism and motion semantics."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from express4d_hf.core.arkit import CHANNEL_INDEX, CHANNELS, mirror_caption
from express4d_hf.data import synthetic as syn
from express4d_hf.data.synthetic import (
    PRIMITIVE_LIBRARY,
    PRIMITIVES,
    CaptionSpec,
    Event,
    PerformerStyle,
    generate_clip,
    pos_tag,
    sample_caption_spec,
    synthesize_motion,
    synthesize_release,
)
from express4d_hf.livelink import read_livelink_csv

NUM_CLIPS = 40
PARTICIPANTS = 5


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return synthesize_release(tmp_path_factory.mktemp("rel") / "Express4D", num_clips=NUM_CLIPS,
                              participants=PARTICIPANTS, seed=0, progress=False)  # fmt: skip


def _names(n: int = NUM_CLIPS) -> list[str]:
    return [f"MySlate_{k}_iPhone_cal" for k in range(1, n + 1)]


def _styles(n: int = 4) -> list[PerformerStyle]:
    return [PerformerStyle.sample(np.random.default_rng(100 + i), i) for i in range(n)]


def _ch(motion, name: str) -> np.ndarray:
    return motion.values[:, CHANNEL_INDEX[name]]


def _event_window(motion, index: int = 0) -> slice:
    event = motion.metadata["events"][index]
    return slice(int(event["start"] * motion.fps), int(event["end"] * motion.fps) + 1)


# --- layout and files ---------------------------------------------------------------------------
def test_layout_is_the_official_release_layout(release):
    assert sorted(p.name for p in release.iterdir()) == sorted(
        ["data", "texts", "train.txt", "test.txt", "texts_plain.txt", "performers.json", "README.txt"]
    )
    assert sorted(p.name for p in (release / "data").iterdir()) == sorted(f"{n}.csv" for n in _names())
    assert sorted(p.name for p in (release / "texts").iterdir()) == sorted(f"{n}.txt" for n in _names())
    # Atomic build: no temporary folder is left next to the result.
    assert [p.name for p in release.parent.iterdir()] == ["Express4D"]
    readme = (release / "README.txt").read_text()
    assert readme.startswith(syn.SYNTHETIC_MARKER) and "NOT real capture data" in readme


def test_every_csv_is_a_clean_60fps_livelink_take(release):
    header = "Timecode,BlendShapeCount," + ",".join(CHANNELS)
    for name in _names():
        path = release / "data" / f"{name}.csv"
        lines = path.read_text().splitlines()
        assert lines[0] == header
        assert all(line.count(",") == 62 and line.split(",")[1] == "61" for line in lines[1:]), name
        motion = read_livelink_csv(path)
        assert motion.fps == 60.0 and motion.values.shape == (len(lines) - 1, 61)
        assert motion.valid.all() and "lost_frames" not in motion.metadata
        assert 2.0 <= motion.duration <= 10.0
        blend = motion.values[:, :52]
        assert blend.min() >= 0.0 and blend.max() <= syn.BLENDSHAPE_CEILING + 1e-4
        assert np.abs(motion.values[:, 52:55]).max() <= syn.HEAD_LIMIT_RAD + 1e-4
        assert np.abs(motion.values[:, 55:]).max() <= syn.EYE_LIMIT_RAD + 1e-4


def test_texts_and_plain_prompts(release):
    plain = (release / "texts_plain.txt").read_text().splitlines()
    assert len(plain) == NUM_CLIPS
    known = syn.known_caption_words()
    for k, name in enumerate(_names()):
        lines = (release / "texts" / f"{name}.txt").read_text().splitlines()
        assert 1 <= len(lines) <= 3 and len(set(lines)) == len(lines)
        for line in lines:
            caption, tokens = line.split("#")
            assert caption.startswith("A person is ")
            assert all(re.fullmatch(r"[a-z]+/[A-Z]+", tok) for tok in tokens.split(" ")), tokens
            assert set(caption.replace(",", " ").lower().split()) <= known, caption
        assert lines[0].split("#")[0] == plain[k]  # line k of texts_plain.txt is the prompt of take k


def test_split_and_performers(release):
    train = (release / "train.txt").read_text().splitlines()
    test = (release / "test.txt").read_text().splitlines()
    assert not set(train) & set(test) and sorted(train + test) == sorted(_names())
    assert len(test) == round(0.2 * NUM_CLIPS)
    performers = json.loads((release / "performers.json").read_text())
    assert sorted(performers) == sorted(_names())
    assert set(performers.values()) == set(range(PARTICIPANTS))  # everyone performs at least once


def test_same_seed_same_bytes_different_seed_different(release, tmp_path):
    again = synthesize_release(tmp_path / "again", num_clips=NUM_CLIPS, participants=PARTICIPANTS, seed=0,
                               progress=False, workers=2)  # fmt: skip  (a pool must not change the bytes)
    files = sorted(p.relative_to(release) for p in release.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (release / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = synthesize_release(tmp_path / "other", num_clips=4, participants=PARTICIPANTS, seed=1, progress=False)
    assert (other / "texts_plain.txt").read_text().splitlines() != (release / "texts_plain.txt").read_text().splitlines()[:4]
    assert (other / "data" / "MySlate_1_iPhone_cal.csv").read_bytes() != (
        release / "data" / "MySlate_1_iPhone_cal.csv"
    ).read_bytes()


def test_refuses_to_replace_foreign_folder_but_replaces_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        synthesize_release(foreign, num_clips=3, participants=2, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # temp folder cleaned up

    out = synthesize_release(tmp_path / "synth", num_clips=3, participants=2, seed=0, progress=False)
    synthesize_release(out, num_clips=5, participants=2, seed=0, progress=False)
    assert len(list((out / "data").iterdir())) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "synth"]
    with pytest.raises(ValueError, match="test_fraction"):
        synthesize_release(tmp_path / "bad", num_clips=3, test_fraction=1.5, progress=False)


# --- captions ------------------------------------------------------------------------------------
def test_caption_side_words_match_the_events():
    """Every 'left'/'right' in a caption comes from a sided event on that side (mirror consistency)."""
    rng = np.random.default_rng(3)
    for _ in range(400):
        spec = sample_caption_spec(rng)
        caption = syn.render_caption(spec, rng)
        assert caption.startswith("A person is ")
        words = caption.replace(",", " ").split()
        sides = [e.spec.side for e in spec.events if e.spec.side]
        assert sorted(w for w in words if w in ("left", "right")) == sorted(sides), caption
        assert len(words) <= 30


def test_pos_tags_follow_the_official_tokenizer_style():
    tags = pos_tag("A person is looking to the left, then smiling broadly")
    assert tags == "a/DET person/NOUN is/AUX look/VERB to/ADP the/DET left/NOUN then/ADV smile/VERB broadly/ADV"


def test_primitives_move_distinct_channel_sets():
    """Distinct primitives must be told apart from motion alone: their channel patterns differ."""
    assert len({p.base for p in PRIMITIVE_LIBRARY.values()}) >= 25
    vectors = {}
    for name, prim in PRIMITIVE_LIBRARY.items():
        v = np.concatenate([prim.weights, np.asarray(prim.gaze) * 2.5])
        vectors[name] = v / np.linalg.norm(v)
    for a in PRIMITIVES:
        for b in PRIMITIVES:
            # Same channels are fine when the time course differs (blink vs closing the eyes, shaking
            # vs turning the head): a temporal encoder tells those apart.
            if a < b and PRIMITIVE_LIBRARY[a].kind == PRIMITIVE_LIBRARY[b].kind:
                assert vectors[a] @ vectors[b] < 0.9, (a, b, float(vectors[a] @ vectors[b]))


# --- motion semantics ----------------------------------------------------------------------------
def test_smile_moves_smile_channels_far_more_than_frown():
    for i, style in enumerate(_styles()):
        smile = synthesize_motion("smile", style, np.random.default_rng(i))
        frown = synthesize_motion("frown", style, np.random.default_rng(i))
        smile_peak = max(_ch(smile, "MouthSmileLeft").max(), _ch(smile, "MouthSmileRight").max())
        frown_peak = max(_ch(frown, "MouthSmileLeft").max(), _ch(frown, "MouthSmileRight").max())
        assert smile_peak > frown_peak + 0.35
        assert _ch(frown, "MouthFrownLeft").max() > _ch(smile, "MouthFrownLeft").max() + 0.3
        # Coupling: a smile also squints the cheeks and the eyes.
        assert _ch(smile, "CheekSquintLeft").max() > 0.2 and _ch(smile, "EyeSquintRight").max() > 0.15


@pytest.mark.parametrize("side,other", [("Left", "Right"), ("Right", "Left")])
def test_wink_closes_one_eye(side, other):
    for i, style in enumerate(_styles()):
        motion = synthesize_motion(f"wink_{side.lower()}", style, np.random.default_rng(i))
        window = _event_window(motion)
        closed = _ch(motion, f"EyeBlink{side}")[window]
        open_ = _ch(motion, f"EyeBlink{other}")[window]
        assert closed.max() > 0.6 and closed.max() > 2.5 * open_.max(), (i, closed.max(), open_.max())


def test_head_gestures_move_the_right_axes():
    for i, style in enumerate(_styles()):
        shake = synthesize_motion("shake_head", style, np.random.default_rng(i))
        nod = synthesize_motion("nod", style, np.random.default_rng(i))
        span = lambda m, c: np.ptp(_ch(m, c)[_event_window(m)])
        assert span(shake, "HeadYaw") > 2 * span(shake, "HeadPitch")
        assert span(nod, "HeadPitch") > 2 * span(nod, "HeadYaw")
        tilt = synthesize_motion("tilt_head_left", style, np.random.default_rng(i))
        roll = _ch(tilt, "HeadRoll")
        assert roll[_event_window(tilt)].min() < roll[:10].mean() - 0.08  # left tilt: negative roll


def test_gaze_moves_look_channels_and_eye_rotations_together():
    for i, style in enumerate(_styles()):
        motion = synthesize_motion("look_left", style, np.random.default_rng(i))
        event = motion.metadata["events"][0]
        middle = int((event["start"] + event["end"]) / 2 * motion.fps)
        frame = motion.values[middle]
        assert frame[CHANNEL_INDEX["EyeLookOutLeft"]] > 0.3 and frame[CHANNEL_INDEX["EyeLookInRight"]] > 0.3
        assert frame[CHANNEL_INDEX["EyeLookInLeft"]] < 0.05 and frame[CHANNEL_INDEX["EyeLookOutRight"]] < 0.05
        assert frame[CHANNEL_INDEX["LeftEyeYaw"]] > 0.12 and frame[CHANNEL_INDEX["RightEyeYaw"]] > 0.12
        # The mirrored clip looks to the right, as its mirrored caption says.
        mirrored = motion.mirror()
        assert "right" in mirrored.caption.split() and "left" not in mirrored.caption.split()
        assert mirrored.values[middle, CHANNEL_INDEX["EyeLookOutRight"]] > 0.3


def test_sided_primitives_move_their_side():
    """'left' means the subject's left (the ARKit ...Left channels) for every sided primitive."""
    left_cols = [i for i, c in enumerate(CHANNELS[:52]) if c.endswith("Left")]
    right_cols = [CHANNEL_INDEX[CHANNELS[i][: -len("Left")] + "Right"] for i in left_cols]
    for name, prim in PRIMITIVE_LIBRARY.items():
        if prim.side is None or prim.base in ("look", "tilt_head", "turn_head"):
            continue  # gaze and head sides are checked by their own tests (signed rotations)
        for i, style in enumerate(_styles(3)):
            motion = synthesize_motion(name, style, np.random.default_rng(i))
            window = _event_window(motion)
            rest = motion.values[:5].mean(0)
            moved = np.abs(motion.values[window] - rest).max(0)
            left, right = moved[left_cols].sum(), moved[right_cols].sum()
            assert (left > 1.5 * right) if prim.side == "left" else (right > 1.5 * left), (name, i, left, right)
    for i, style in enumerate(_styles(3)):
        left = synthesize_motion("turn_head_left", style, np.random.default_rng(i))
        right = synthesize_motion("turn_head_right", style, np.random.default_rng(i))
        assert _ch(left, "HeadYaw")[_event_window(left)].max() > 0.1  # towards the subject's left: positive
        assert _ch(right, "HeadYaw")[_event_window(right)].min() < -0.1


def test_intensity_modifier_scales_the_expression():
    low, high = [], []
    for i, style in enumerate(_styles()):
        for seed in range(3):
            for level, out in (("low", low), ("high", high)):
                m = synthesize_motion(CaptionSpec.single("raise_brows", intensity=level), style, np.random.default_rng(seed))
                out.append(_ch(m, "BrowInnerUp").max())
    assert np.mean(high) > 1.6 * np.mean(low)


def test_performers_differ_on_the_same_instruction():
    spec = CaptionSpec.sequence("smile", Event("nod", repeats=2))
    a, b = (synthesize_motion(spec, style, np.random.default_rng(7)) for style in _styles(2))
    n = min(a.num_frames, b.num_frames)
    assert np.abs(a.values[:n] - b.values[:n]).max() > 0.1
    for m in (a, b):
        assert _ch(m, "MouthSmileLeft").max() > 0.4
        assert m.metadata["primitives"] == ["smile", "nod"]


def test_durations_stay_within_limits_even_for_long_instructions():
    slow = [Event("close_eyes", speed="slow", hold="long"), Event("raise_brows", speed="slow", repeats=3),
            Event("nod", speed="slow", repeats=3)]  # fmt: skip
    for i, style in enumerate(_styles()):
        motion = synthesize_motion(CaptionSpec.sequence(*slow), style, np.random.default_rng(i))
        assert 2.0 <= motion.duration <= 10.0
        events = motion.metadata["events"]
        assert [e["primitive"] for e in events] == ["close_eyes", "raise_brows", "nod"]
        assert all(e1["end"] <= e2["start"] for e1, e2 in itertools.pairwise(events))  # played in order
        assert events[-1]["end"] <= motion.duration
    short = synthesize_motion(CaptionSpec.single("blink", speed="quick", repeats=2), rng=np.random.default_rng(0))
    assert short.duration >= 2.0


def test_background_blinks_are_present_but_not_during_eyelid_events():
    rng = np.random.default_rng(5)
    style = _styles(1)[0]
    spontaneous = 0
    for _ in range(8):
        motion = synthesize_motion(CaptionSpec.single("pucker", hold="long", speed="slow"), style, rng)
        spontaneous += int(_ch(motion, "EyeBlinkLeft").max() > 0.6)
    assert spontaneous >= 5  # blinks every 2-6 s show up in most clips of 4+ seconds


def test_generate_clip_and_mirror_caption_consistency():
    rng = np.random.default_rng(11)
    clip = generate_clip(rng, _styles(1)[0], spec=CaptionSpec.single("raise_brow_right"), num_paraphrases=3)
    assert len(clip.captions) == 3 and all("right" in c.split() for c in clip.captions)
    assert clip.motion.caption == clip.captions[0]
    mirrored = clip.motion.mirror()
    assert mirrored.caption == mirror_caption(clip.captions[0])
    window = _event_window(clip.motion)
    assert _ch(mirrored, "BrowOuterUpLeft")[window].max() > _ch(mirrored, "BrowOuterUpRight")[window].max() + 0.3


def test_spec_validation_is_clear():
    with pytest.raises(ValueError, match="unknown primitive"):
        Event("moonwalk")
    with pytest.raises(ValueError, match="same face region"):
        CaptionSpec(((Event("smile"), Event("frown")),))
    spec = sample_caption_spec(np.random.default_rng(0))
    assert CaptionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
