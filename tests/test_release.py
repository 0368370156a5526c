"""The release reader: happy path, .npy takes, and one error that lists every problem by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from express4d_hf.core.arkit import CHANNELS
from express4d_hf.data.release import (
    ReleaseFormatError,
    is_release_dir,
    parse_caption_file,
    read_release,
    write_release,
)
from express4d_hf.livelink import FaceMotion, write_livelink_csv


def _motion(frames: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((frames, len(CHANNELS))) * 0.8).astype(np.float32)


def _clips(n_train=3, n_test=2, frames=90):
    for k in range(n_train + n_test):
        yield (f"MySlate_{k + 1}_iPhone_cal", "train" if k < n_train else "test", _motion(frames + k, k),
               [f"A person is smiling {k}#a/DET person/NOUN smile/VERB", f"Someone smiles {k}"])  # fmt: skip


def test_happy_path_reads_splits_captions_performers_and_motion(tmp_path):
    performers = {f"MySlate_{k + 1}_iPhone_cal": k % 2 for k in range(5)}
    root = write_release(tmp_path / "rel", _clips(), performers=performers)
    (root / "texts_plain.txt").write_text("p1\np2\n")
    release = read_release(root)
    assert is_release_dir(root)
    assert [t.name for t in release.split("train")] == [f"MySlate_{k}_iPhone_cal" for k in (1, 2, 3)]
    assert [t.name for t in release.split("test")] == ["MySlate_4_iPhone_cal", "MySlate_5_iPhone_cal"]
    take = release.take("MySlate_2_iPhone_cal")
    assert take.captions == ("A person is smiling 1", "Someone smiles 1")
    assert take.tokens == ("a/DET person/NOUN smile/VERB", "")
    assert take.performer == 1 and release.plain_prompts == ["p1", "p2"]
    motion = release.load_motion(take)
    assert isinstance(motion, FaceMotion) and motion.fps == 60.0 and motion.caption == "A person is smiling 1"
    np.testing.assert_allclose(motion.values, _motion(91, 1), atol=1e-6)
    assert motion.metadata["take"] == take.name and motion.metadata["performer"] == 1


def test_npy_takes_and_string_performer_labels(tmp_path):
    root = write_release(tmp_path / "rel", _clips(2, 1), motion_format="npy")
    (root / "performers.json").write_text(json.dumps({"MySlate_1_iPhone_cal": "anna", "MySlate_2_iPhone_cal": "bo",
                                                      "MySlate_3_iPhone_cal": "anna"}))  # fmt: skip
    release = read_release(root)
    assert release.takes[0].path.suffix == ".npy"
    motion = release.load_motion("MySlate_3_iPhone_cal")
    np.testing.assert_array_equal(motion.values, _motion(92, 2))
    assert motion.valid.all() and motion.fps == 60.0
    assert [t.performer for t in release.takes] == [0, 1, 0] and release.performer_names == {0: "anna", 1: "bo"}


def test_npy_must_be_numeric_t_by_61_and_is_never_unpickled(tmp_path):
    root = write_release(tmp_path / "rel", _clips(1, 1), motion_format="npy")
    np.save(root / "data" / "MySlate_1_iPhone_cal.npy", np.zeros((10, 60), np.float32))
    np.save(root / "data" / "MySlate_2_iPhone_cal.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    release = read_release(root)
    with pytest.raises(ValueError, match=r"MySlate_1_iPhone_cal\.npy: expected a numeric \[frames, 61\]"):
        release.load_motion("MySlate_1_iPhone_cal")
    with pytest.raises(ValueError, match="not a plain numeric .npy"):
        release.load_motion("MySlate_2_iPhone_cal")


def test_every_problem_is_reported_at_once_by_name(tmp_path):
    root = write_release(tmp_path / "rel", _clips(4, 3))
    (root / "data" / "MySlate_1_iPhone_cal.csv").unlink()  # train take without data
    (root / "texts" / "MySlate_5_iPhone_cal.txt").unlink()  # test take without text
    write_livelink_csv(FaceMotion(_motion(30, 9)), root / "data" / "Orphan_take.csv")  # data in no split
    (root / "test.txt").write_text((root / "test.txt").read_text() + "MySlate_2_iPhone_cal\n")  # in both splits
    (root / "texts" / "MySlate_3_iPhone_cal.txt").write_text("\n  \n#only/TOKENS\n")  # no caption
    with pytest.raises(ReleaseFormatError) as info:
        read_release(root)
    err = info.value
    assert sorted(kind for kind, _, _ in err.problems) == [
        "both_splits", "empty_caption", "no_data", "no_text", "unsplit_data"]  # fmt: skip
    message = str(err)
    for name in ("MySlate_1_iPhone_cal", "MySlate_5_iPhone_cal", "Orphan_take.csv", "MySlate_2_iPhone_cal",
                 "MySlate_3_iPhone_cal.txt"):  # fmt: skip
        assert name in message
    assert "5 problem(s)" in message and message.count("Fix:") == 5
    assert "MySlate_4_iPhone_cal" not in message  # the healthy take is not blamed


def test_missing_layout_and_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_release(tmp_path / "nope")
    (tmp_path / "half" / "data").mkdir(parents=True)
    with pytest.raises(ReleaseFormatError) as info:
        read_release(tmp_path / "half")
    assert {name for _, name, _ in info.value.problems} == {"texts/", "train.txt", "test.txt"}


def test_fingerprint_follows_content(tmp_path):
    root = write_release(tmp_path / "rel", _clips(2, 1))
    first = read_release(root).fingerprint()
    assert read_release(root).fingerprint() == first
    (root / "texts" / "MySlate_1_iPhone_cal.txt").write_text("A person is frowning#\n")
    assert read_release(root).fingerprint() != first


def test_caption_lines_ignore_extra_tags():
    assert parse_caption_file("Smile#smile/VERB#0.0#0.0\r\nWink left#\n") == (["Smile", "Wink left"], ["smile/VERB", ""])
