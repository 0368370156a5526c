"""Release -> HF dataset folder: load_dataset round trip, train-only stats, card YAML, atomic build, push
dry run, load_express4d resolution and the `express4d data` verbs."""

from __future__ import annotations



import json
import shutil

import numpy as np
import pytest

from express4d_hf.core.arkit import CHANNELS
from express4d_hf.cli import main
from express4d_hf.data import hub
from express4d_hf.data.release import ReleaseFormatError, read_release, write_release
from express4d_hf.core.stats import NormStats
from express4d_hf.livelink import FaceMotion

N_TRAIN, N_TEST = 6, 3


def _clips():
    rng = np.random.default_rng(0)
    for k in range(N_TRAIN + N_TEST):
        split = "train" if k < N_TRAIN else "test"
        values = rng.random((120 + 15 * k, len(CHANNELS))) * 0.3
        if split == "test":
            values += 0.5  # test clips sit elsewhere: train-only stats must not see them
        tokens = "a/DET person/NOUN wink/VERB left/ADV" if k % 2 else ""  # some takes carry POS tokens, as the release
        yield f"MySlate_{k + 1}_iPhone_cal", split, values.astype(np.float32), [f"A person winks left {k}#{tokens}", f"alt {k}"]


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "Express4D"
    return write_release(root, _clips(), performers={f"MySlate_{k + 1}_iPhone_cal": k % 4 for k in range(N_TRAIN)})


@pytest.fixture(scope="module")
def built(release_dir, tmp_path_factory):
    return hub.build_dataset(release_dir, tmp_path_factory.mktemp("built") / "ds", progress=False)


def _load(folder, tmp_path):
    import datasets

    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf"))


def test_load_dataset_gives_train_test_with_columns_shapes_dtypes(built, release_dir, tmp_path):
    from datasets import Array2D

    dd = _load(built, tmp_path)
    assert set(dd) == {"train", "test"} and (dd["train"].num_rows, dd["test"].num_rows) == (N_TRAIN, N_TEST)
    assert dd["train"].column_names == ["id", "caption", "captions", "tokens", "performer", "fps", "num_frames",
                                        "motion", "valid"]  # fmt: skip
    assert dd["train"].features["motion"] == Array2D((None, 61), "float32")
    row = dd["test"].with_format("numpy")[1]
    assert row["motion"].dtype == np.float32 and row["motion"].shape == (row["num_frames"], 61)
    assert row["valid"].shape == (row["num_frames"],) and row["valid"].all() and row["fps"] == 60
    assert row["id"] == "MySlate_8_iPhone_cal" and list(row["captions"]) == ["A person winks left 7", "alt 7"]
    assert row["caption"] == "A person winks left 7" and row["performer"] == -1  # unknown performer
    assert dd["train"][2]["performer"] == 2
    stored = read_release(release_dir).load_motion("MySlate_8_iPhone_cal").values
    np.testing.assert_array_equal(row["motion"], stored)


def test_stats_are_train_only_at_20_fps(built, release_dir):
    stats = NormStats.load(built)
    release = read_release(release_dir)
    at_20 = {t.name: release.load_motion(t).resample(20).values for t in release.takes}
    train_only = NormStats.compute([at_20[t.name] for t in release.split("train")])
    everything = NormStats.compute(list(at_20.values()))
    assert stats.fps == 20 and stats.info["split"] == "train" and stats.info["num_clips"] == N_TRAIN
    np.testing.assert_allclose(stats.mean, train_only.mean, atol=1e-5)
    np.testing.assert_allclose(stats.std, train_only.std, atol=1e-5)
    assert np.abs(stats.mean - everything.mean).min() > 0.05  # the test shift would show up
    assert hub.dataset_stats(built).info["data_fingerprint"] == hub.dataset_fingerprint(built)


def test_card_yaml_round_trips_after_copying_the_folder(built, tmp_path):
    from huggingface_hub import DatasetCard

    copy = tmp_path / "snapshot" / "express4d"
    shutil.copytree(built, copy)  # what snapshot_download gives: the same files elsewhere
    dd = _load(copy, tmp_path)
    assert {k: v.num_rows for k, v in dd.items()} == {"train": N_TRAIN, "test": N_TEST}
    assert dd["train"].features == hub.dataset_features()
    assert dd["train"].with_format("numpy")[0]["motion"].shape[1] == 61
    card = DatasetCard.load(copy / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and "extra_gated_fields" in data
    assert any("deep-fake" in key for key in data["extra_gated_fields"])
    assert data["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"},
                                                {"split": "test", "path": "data/test-*.parquet"}]  # fmt: skip
    assert "2508.12438" in card.text and "research use only" in card.text
    assert hub.dataset_fingerprint(built) in card.text


def test_build_is_atomic_and_respects_overwrite(release_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub, "_render_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        hub.build_dataset(release_dir, out, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither out nor a temporary folder is left behind
    monkeypatch.undo()

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(hub.DatasetExistsError, match="--overwrite"):
        hub.build_dataset(release_dir, out, progress=False)
    with pytest.raises(hub.DatasetExistsError, match="replaces only a dataset folder built by"):
        hub.build_dataset(release_dir, out, progress=False, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"  # a user's folder is never replaced
    (out / "keep.txt").unlink()
    hub.build_dataset(release_dir, out, progress=False, overwrite=True, num_proc=2)  # empty folder; pool path too
    hub.build_dataset(release_dir, out, progress=False, overwrite=True)  # a built dataset is replaced
    assert hub.is_built_dataset(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_unreadable_csv_is_reported_by_name_and_nothing_is_written(release_dir, tmp_path):
    broken = tmp_path / "rel"
    shutil.copytree(release_dir, broken)
    (broken / "data" / "MySlate_2_iPhone_cal.csv").write_text("Timecode,BlendShapeCount,EyeBlinkLeft\n")
    with pytest.raises(ReleaseFormatError, match=r"cannot be read: MySlate_2_iPhone_cal\.csv"):
        hub.build_dataset(broken, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_push_dry_run_lists_files_and_sizes(built, capsys):
    files = hub.push_dataset(built, "someone/express4d", dry_run=True)
    names = [name for name, _ in files]
    assert {"README.md", "stats.json", "express4d.json"} <= set(names)
    assert any(n.startswith("data/train-") for n in names) and all(size > 0 for _, size in files)
    out = capsys.readouterr().out
    assert "Dry run: nothing uploaded" in out and "https://huggingface.co/datasets/someone/express4d" in out
    with pytest.raises(ValueError, match="owner/name"):
        hub.push_dataset(built, "not a repo", dry_run=True)


def test_load_express4d_resolves_release_built_folder_and_offline_repo(release_dir, built, tmp_path):
    cache = tmp_path / "cache"
    dd = hub.load_express4d(release_dir, cache_dir=cache, progress=False)
    assert dd["train"].num_rows == N_TRAIN
    (target,) = (cache / "datasets").iterdir()
    assert target.name == f"release-{read_release(release_dir).fingerprint()[:16]}-f{hub.FORMAT_VERSION}"
    stamp = (target / "stats.json").stat().st_mtime_ns
    assert hub.resolve_dataset_dir(release_dir, cache) == target and (target / "stats.json").stat().st_mtime_ns == stamp
    assert hub.dataset_fingerprint(release_dir, cache) == hub.dataset_fingerprint(built)  # same content, same data
    assert hub.load_express4d(built, cache_dir=cache, progress=False)["test"].num_rows == N_TEST
    with pytest.raises(FileNotFoundError, match="no such local folder, and as a Hub dataset it is not in the local Hugging Face cache"):
        hub.resolve_dataset_dir("nobody-here/no-such-dataset-xyz", cache)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        hub.resolve_dataset_dir("./missing-folder", cache)


def test_default_corpus_is_synthesised_built_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "PROCEDURAL_NUM_CLIPS", 24)  # the real default is 1205; keep the test fast
    monkeypatch.setattr(hub, "PROCEDURAL_PARTICIPANTS", 3)
    folder = hub.resolve_dataset_dir(None, tmp_path, progress=False)
    assert folder.parent == tmp_path / "datasets" and hub.is_built_dataset(folder)
    manifest = hub.dataset_manifest(None, tmp_path)
    assert manifest["splits"]["train"]["num_clips"] + manifest["splits"]["test"]["num_clips"] == 24
    assert "procedural" in manifest["source"]
    stamp = (folder / "README.md").stat().st_mtime_ns
    assert hub.resolve_dataset_dir(None, tmp_path) == folder and (folder / "README.md").stat().st_mtime_ns == stamp


def test_cli_verbs(release_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "build", str(release_dir), str(out), "--no-progress"]) == 0
    assert "train 6 clips, test 3 clips" in capsys.readouterr().out
    assert main(["data", "build", str(release_dir), str(out), "--no-progress"]) == 2
    assert "exists already; pass --overwrite" in capsys.readouterr().err

    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: 6 clips" in text and "test: 3 clips" in text and "duration min" in text
    assert "'A person winks left 0'" in text and "computed on split 'train'" in text
    assert main(["data", "info", str(release_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["test"]["num_clips"] == 3

    assert main(["data", "push", str(out), "me/express4d", "--dry-run"]) == 0
    assert "nothing uploaded" in capsys.readouterr().out
    assert main(["data", "push", str(tmp_path), "me/express4d", "--dry-run"]) == 2
    assert "not a built dataset folder" in capsys.readouterr().err

    assert main(["data"]) == 1 and "synth" in capsys.readouterr().out
    synth = tmp_path / "synth"
    assert main(["data", "synth", str(synth), "--num-clips", "8", "--participants", "2", "--no-progress"]) == 0
    assert len(read_release(synth).takes) == 8
    with pytest.raises(SystemExit):
        main(["data", "build", "--help"])
    assert "RELEASE_DIR" in capsys.readouterr().out


def test_write_release_refuses_existing_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError):
        write_release(tmp_path / "x", [("a", "train", FaceMotion(np.zeros((5, 61))), ["c"])])


# --- push: the gate, with a recorder standing in for the Hub ---------------------------------------------
def _hub_calls(recorder):
    return [c for c in recorder.calls if c.name != "HfApi"]


def test_push_gates_real_data_before_uploading(built, tmp_path, monkeypatch, capsys):
    from hub_recorder import HubRecorder

    copy = tmp_path / "ds"
    shutil.copytree(built, copy)
    recorder = HubRecorder.install(monkeypatch)
    assert main(["data", "push", str(copy), "me/express4d"]) == 0
    calls = _hub_calls(recorder)
    assert [c.name for c in calls] == ["create_repo", "update_repo_settings", "upload_folder"]  # gate first
    assert calls[0].kwargs["repo_type"] == "dataset" and calls[0].kwargs["exist_ok"]
    assert calls[1].args == ("me/express4d",) and calls[1].kwargs == {"repo_type": "dataset", "gated": "auto"}
    uploaded = recorder.files("me/express4d")
    assert {"README.md", "stats.json", "express4d.json"} <= set(uploaded)
    card = recorder.text("me/express4d", "README.md")
    assert 'load_dataset("me/express4d")' in card and hub.REPO_ID_PLACEHOLDER not in card
    out = capsys.readouterr().out
    assert "dataset repo me/express4d: public, gated (auto approval" in out and "uploaded" in out

    recorder.calls.clear()
    hub.push_dataset(copy, "me/express4d", gated="manual", private=True)
    assert _hub_calls(recorder)[1].kwargs["gated"] == "manual"
    recorder.calls.clear()
    hub.push_dataset(copy, "me/express4d", gated="off")
    assert _hub_calls(recorder)[1].kwargs["gated"] is False
    with pytest.raises(ValueError, match="gated must be one of"):
        hub.push_dataset(copy, "me/express4d", gated="sometimes")


def test_procedural_build_gets_its_own_card_and_no_gate(tmp_path, monkeypatch, capsys):
    from huggingface_hub import DatasetCard

    from express4d_hf.data.synthetic import synthesize_release
    from hub_recorder import HubRecorder

    release = synthesize_release(tmp_path / "synth", num_clips=8, participants=2, seed=0, progress=False)
    assert hub.is_procedural_release(release)
    out = hub.build_dataset(release, tmp_path / "ds", progress=False)
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["pretty_name"] == "Express4D procedural stand-in" and data["license"] == "apache-2.0"
    assert "extra_gated_fields" not in data and "extra_gated_prompt" not in data and "synthetic" in data["tags"]
    assert card.text.lstrip().startswith("# Express4D procedural stand-in\n\n> **PROCEDURAL STAND-IN: not real capture data.**")
    assert "No person was recorded" in card.text and "research use only" not in card.text
    assert hub.resolve_gating(out) is None and hub.dataset_manifest(out)["procedural"] is True

    hub.push_dataset(out, "me/stand-in", dry_run=True)
    assert "of procedural stand-in -> https://huggingface.co/datasets/me/stand-in (public, not gated)" in capsys.readouterr().out
    recorder = HubRecorder.install(monkeypatch)
    hub.push_dataset(out, "me/stand-in")
    assert _hub_calls(recorder)[1].kwargs["gated"] is False


def test_clips_carry_the_release_pos_tokens(built, tmp_path):
    from express4d_hf.data.hub import load_express4d
    from express4d_hf.data.splits import clips_from_split

    split = load_express4d(built, cache_dir=tmp_path, progress=False)["train"]
    clips = clips_from_split(split)
    first_tokens = {row["id"]: row["tokens"][0] for row in split if row["tokens"] and row["tokens"][0]}
    assert first_tokens and len(first_tokens) < len(clips)
    for clip in clips:
        assert clip.metadata.get("pos_tokens") == first_tokens.get(clip.metadata["id"])
