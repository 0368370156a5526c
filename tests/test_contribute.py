"""Contribute logic: every validation rule accepts a good take and rejects its own kind of bad one;
nothing is stored without consent; an accepted take lands in the release layout and reads back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from express4d_hf.core.arkit import CHANNEL_INDEX
from express4d_hf.apps.contribute import (
    CONTRIBUTION_LICENSE,
    canonical_csv,
    ContributionError,
    ValidationRules,
    check_caption,
    random_instruction,
    store_contribution,
    validate_take,
)
from express4d_hf.data.release import read_release
from express4d_hf.livelink import FaceMotion, format_timecode, read_livelink_csv, write_livelink_csv

CAPTION = "A person is smiling softly and then raising their eyebrows"


def good_values(num_frames: int = 180, seed: int = 0) -> np.ndarray:
    """A plausible take: every blendshape moves a little inside [0, 1], small head and eye turns."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, num_frames, dtype=np.float32)[:, None]
    values = np.zeros((num_frames, 61), np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(1, 52)).astype(np.float32)
    values[:, :52] = 0.3 + 0.2 * np.sin(t + phase)
    values[:, 52:] = 0.1 * np.sin(t + rng.uniform(0, 6, size=(1, 9)).astype(np.float32))
    return values


def write_take(folder, values=None, fps=60, name="take.csv") -> str:
    path = folder / name
    # Start mid-second, as real takes do: the reader infers the timecode rate from the frame field.
    motion = FaceMotion(good_values() if values is None else values, fps=fps, start_timecode="10:00:00:45.000")
    write_livelink_csv(motion, path, fps=None)
    return str(path)


def rule_results(report) -> dict[str, bool]:
    return {c.rule: c.passed for c in report.checks}


def test_good_take_passes_every_rule(tmp_path):
    report = validate_take(write_take(tmp_path))
    assert report.ok, report.to_markdown()
    assert list(rule_results(report)) == ["file", "format", "frame_rate", "duration", "tracking_loss",
                                          "channel_range", "flat_channels"]  # fmt: skip
    assert report.motion.num_frames == 180 and report.motion.fps == 60
    assert len(report.sha256) == 64
    assert "Accepted" in report.to_markdown()


def test_rejects_wrong_file_type_and_size(tmp_path):
    path = tmp_path / "take.txt"
    path.write_text("Timecode,BlendShapeCount\n")
    report = validate_take(path)
    assert not report.ok and report.failed[0].rule == "file" and ".csv" in report.failed[0].message

    big = write_take(tmp_path)
    report = validate_take(big, ValidationRules(max_file_bytes=1000))
    assert rule_results(report) == {"file": False}
    assert "MB" in report.failed[0].message


def test_rejects_a_file_that_is_not_live_link(tmp_path):
    path = tmp_path / "video.csv"
    path.write_text("name,age\nada,36\n")
    report = validate_take(path)
    assert rule_results(report) == {"file": True, "format": False}
    assert "Timecode" in report.failed[0].message and report.motion is None


def test_rejects_wrong_frame_rate(tmp_path):
    report = validate_take(write_take(tmp_path, good_values(90), fps=30))
    assert rule_results(report)["frame_rate"] is False
    assert "30 fps" in report.failed[0].message and "60" in report.failed[0].message


@pytest.mark.parametrize("num_frames", [30, 660])  # 0.5 s and 11 s at 60 fps
def test_rejects_duration_outside_1_to_10_s(tmp_path, num_frames):
    report = validate_take(write_take(tmp_path, good_values(num_frames)))
    assert [c.rule for c in report.failed] == ["duration"]


def test_rejects_too_much_tracking_loss(tmp_path):
    path = tmp_path / "lossy.csv"
    write_livelink_csv(FaceMotion(good_values(), fps=60), path, fps=None)
    lines = path.read_text().splitlines()
    # Live Link writes "<timecode>,0" rows while the face is lost: a third of the take here.
    for i in range(60, 120):
        lines[1 + i] = f"{format_timecode(i, 60)},0"
    path.write_text("\n".join(lines) + "\n")
    assert int((~read_livelink_csv(path, on_tracking_loss="mask").valid).sum()) == 60
    report = validate_take(path)
    assert [c.rule for c in report.failed] == ["tracking_loss"]
    assert "33.3%" in report.failed[0].message
    # A few lost frames are fine.
    assert validate_take(path, ValidationRules(max_tracking_loss=0.4)).ok


def test_rejects_values_out_of_range(tmp_path):
    values = good_values()
    values[50:60, CHANNEL_INDEX["JawOpen"]] = 3.0
    report = validate_take(write_take(tmp_path, values, name="jaw.csv"))
    assert [c.rule for c in report.failed] == ["channel_range"] and "JawOpen" in report.failed[0].message

    values = good_values()
    values[:, CHANNEL_INDEX["HeadYaw"]] = 45.0  # degrees written where radians belong
    report = validate_take(write_take(tmp_path, values, name="degrees.csv"))
    assert [c.rule for c in report.failed] == ["channel_range"] and "degrees" in report.failed[0].message


def test_rejects_a_frozen_face_and_warns_about_flat_channels(tmp_path):
    values = np.full((180, 61), 0.2, np.float32)
    report = validate_take(write_take(tmp_path, values, name="frozen.csv"))
    assert [c.rule for c in report.failed] == ["flat_channels"]
    assert "0 of 52" in report.failed[0].message

    values = good_values()
    values[:, CHANNEL_INDEX["TongueOut"]] = 0.0
    values[:, 52:55] = 0.0  # head rotation not recorded
    report = validate_take(write_take(tmp_path, values, name="ok.csv"))
    assert report.ok
    assert any("TongueOut" in w for w in report.warnings) and any("head rotation" in w for w in report.warnings)


def test_consent_is_required_and_nothing_is_written(tmp_path):
    report = validate_take(write_take(tmp_path))
    folder = tmp_path / "contributions"
    for consent in (False, None, "yes"):
        with pytest.raises(ContributionError, match="consent"):
            store_contribution(report, CAPTION, folder, consent=consent)
    assert not folder.exists()


def test_rejected_take_cannot_be_stored(tmp_path):
    report = validate_take(write_take(tmp_path, good_values(30)))
    with pytest.raises(ContributionError, match="rejected"):
        store_contribution(report, CAPTION, tmp_path / "contributions", consent=True)
    assert not (tmp_path / "contributions").exists()


def test_accepted_take_is_stored_in_the_release_layout(tmp_path):
    source = write_take(tmp_path)
    report = validate_take(source)
    folder = tmp_path / "contributions"
    stored = store_contribution(report, CAPTION, folder, consent=True, contributor="Ada",
                                instruction="A person is smiling softly")  # fmt: skip
    take = stored.take
    assert (folder / "data" / f"{take}.csv").read_bytes() == canonical_csv(report.motion)  # re-written, not the upload
    assert (folder / "train.txt").read_text() == f"{take}\n" and (folder / "test.txt").read_text() == ""
    text = (folder / "texts" / f"{take}.txt").read_text()
    assert text.startswith(CAPTION + "#") and "smile/VERB" in text
    meta = json.loads((folder / "meta" / f"{take}.json").read_text())
    assert meta["license"] == CONTRIBUTION_LICENSE and meta["consent"]["given"] is True
    assert meta["contributor"] == "Ada" and meta["validation"]["sha256"] == report.sha256

    release = read_release(folder)  # what `express4d data build` reads
    assert [(t.name, t.split, t.captions[0]) for t in release.takes] == [(take, "train", CAPTION)]
    assert release.performer_names  # the contributor is the performer
    motion = release.load_motion(take)
    np.testing.assert_allclose(motion.values, report.motion.values, atol=1e-6)

    # The same upload twice is refused; another take joins the split.
    with pytest.raises(ContributionError, match="already contributed"):
        store_contribution(report, CAPTION, folder, consent=True)
    second = store_contribution(validate_take(write_take(tmp_path, good_values(seed=1), name="b.csv")),
                                "A person is frowning", folder, consent=True)  # fmt: skip
    assert (folder / "train.txt").read_text().split() == [take, second.take]
    assert len(read_release(folder).takes) == 2


def test_caption_rules_and_random_instruction():
    assert check_caption("  A person   is smiling \n") == "A person is smiling"
    for bad, word in (("", "empty"), ("x" * 301, "limit"), ("smile # wink", "#")):
        with pytest.raises(ContributionError, match=word):
            check_caption(bad)
    assert random_instruction(5) == random_instruction(5)
    assert random_instruction(5).startswith("A person is")
    assert len({random_instruction(s) for s in range(6)}) > 1
