"""The contributions store (issue 16): the re-written 61-channel CSV is stored, not the upload; duplicates are found
on the re-written content; the store has quotas; rejected, duplicate and refused uploads are removed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from express4d_hf.arkit import CHANNELS
from express4d_hf.apps.contribute import (
    DuplicateContributionError,
    StoreFullError,
    StoreQuota,
    canonical_csv,
    store_contribution,
    store_full_message,
    store_usage,
    validate_take,
)
from express4d_hf.livelink import format_timecode, read_livelink_csv

CAPTION = "A person is smiling softly"


def _values(num_frames=180, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, num_frames)[:, None]
    values = np.zeros((num_frames, 61))
    values[:, :52] = 0.3 + 0.2 * np.sin(t + rng.uniform(0, 6, (1, 52)))
    values[:, 52:] = 0.1 * np.sin(t + rng.uniform(0, 6, (1, 9)))
    return values.astype(np.float32)


def _upload(path, values, *, padding=0, start=36000 * 60 + 45, lost=(), fmt="{:.7g}", pad_cell="0"):
    """A Live Link-like upload: optional padding columns, lost rows, any start timecode and number format."""
    header = ["Timecode", "BlendShapeCount", *CHANNELS, *(f"Pad{k}" for k in range(padding))]
    lines = [",".join(header)]
    for f, row in enumerate(values):
        tc = format_timecode(start + f, 60)
        if f in lost:
            lines.append(f"{tc},0")
        else:
            lines.append(",".join([tc, "61", *(fmt.format(float(x)) for x in row), *([pad_cell] * padding)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_rewritten_csv_is_stored_not_the_upload(tmp_path):
    upload = _upload(tmp_path / "padded.csv", _values(), padding=400, lost=(50, 51), pad_cell="0.000000000")
    report = validate_take(upload)
    assert report.ok, report.to_markdown()
    folder = tmp_path / "store"
    stored = store_contribution(report, CAPTION, folder, consent=True)
    csv = folder / "data" / f"{stored.take}.csv"
    assert csv.stat().st_size < upload.stat().st_size / 5  # the padding is gone
    header = csv.read_text().split("\n", 1)[0].split(",")
    assert header == ["Timecode", "BlendShapeCount", *CHANNELS]
    back = read_livelink_csv(csv, on_tracking_loss="mask")
    np.testing.assert_allclose(back.values, report.motion.values, atol=1e-6)
    assert back.fps == 60 and (~back.valid).sum() == 2 and back.start_timecode == report.motion.start_timecode
    meta = json.loads((folder / "meta" / f"{stored.take}.json").read_text())
    assert meta["validation"]["content_sha256"] == report.content_sha256 != report.sha256


def test_duplicates_are_found_on_the_rewritten_content(tmp_path):
    values = _values()
    folder = tmp_path / "store"
    store_contribution(validate_take(_upload(tmp_path / "a.csv", values, padding=3)), CAPTION, folder, consent=True)
    variants = {
        "one padding byte changed": dict(padding=3, pad_cell="1"),
        "no padding": dict(),
        "another start timecode": dict(padding=3, start=5),
        "spaces around the numbers": dict(padding=3, fmt=" {:.7g} "),
    }
    for name, kwargs in variants.items():
        upload = _upload(tmp_path / "b.csv", values, **kwargs)
        report = validate_take(upload)
        assert report.ok and report.sha256 != validate_take(tmp_path / "a.csv").sha256, name
        with pytest.raises(DuplicateContributionError, match="already contributed"):
            store_contribution(report, CAPTION, folder, consent=True)
    other = validate_take(_upload(tmp_path / "c.csv", _values(seed=1)))
    store_contribution(other, CAPTION, folder, consent=True)
    assert len((folder / "train.txt").read_text().split()) == 2


def test_store_quotas(tmp_path):
    folder = tmp_path / "store"
    first = validate_take(_upload(tmp_path / "a.csv", _values()))
    second = validate_take(_upload(tmp_path / "b.csv", _values(seed=1)))
    store_contribution(first, CAPTION, folder, consent=True, quota=StoreQuota(max_takes=1))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(StoreFullError, match=r"full \(1 of 1 takes\)"):
        store_contribution(second, CAPTION, folder, consent=True, quota=StoreQuota(max_takes=1))
    size, takes = store_usage(folder)
    assert takes == 1
    with pytest.raises(StoreFullError, match="MiB used"):
        store_contribution(second, CAPTION, folder, consent=True, quota=StoreQuota(max_bytes=size + 1000))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written when refused
    assert "1 of 1 takes" in store_full_message(folder, StoreQuota(max_takes=1))
    assert "MiB used" in store_full_message(folder, StoreQuota(max_bytes=size))
    assert store_full_message(folder, StoreQuota(max_bytes=size + 1, max_takes=2)) is None
    store_contribution(second, CAPTION, folder, consent=True, quota=StoreQuota(max_bytes=None, max_takes=None))
    assert store_usage(folder)[1] == 2


def test_canonical_csv_is_independent_of_the_upload_form(tmp_path):
    values = _values(120)
    a = validate_take(_upload(tmp_path / "a.csv", values, padding=2))
    b = validate_take(_upload(tmp_path / "b.csv", values, start=99, fmt="{:.7g}  "))
    assert canonical_csv(a.motion, start_at_zero=True) == canonical_csv(b.motion, start_at_zero=True)
    assert a.content_sha256 == b.content_sha256


def test_unreadable_uploads_are_reported_not_raised(tmp_path):
    for name, data in (("video.csv", bytes(range(256)) * 40), ("quoted.csv", b'Timecode,""\n""\n'),
                       ("bom.csv", b"\xef\xbb\xbf"), ("sep.csv", "Timecode\u2028x\n".encode())):  # fmt: skip
        path = tmp_path / name
        path.write_bytes(data)
        report = validate_take(path)
        assert not report.ok and report.failed[0].rule == "format", name


# --- the app ------------------------------------------------------------------------------------------
def test_space_removes_rejected_and_duplicate_uploads_and_reports_a_full_store(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import gradio as gr

    from express4d_hf.apps.space import Express4DSpace, SpaceConfig, _user_errors

    monkeypatch.setenv("EXPRESS4D_CONTRIBUTIONS_MAX_TAKES", "1")
    monkeypatch.setenv("EXPRESS4D_CONTRIBUTIONS_MAX_BYTES", "0")  # 0: no size limit
    config = SpaceConfig.from_env(models=[str(tmp_path / "none")], contributions_dir=tmp_path / "c",
                                  output_dir=tmp_path / "o")  # fmt: skip
    assert config.contributions_quota == StoreQuota(max_bytes=None, max_takes=1)
    app = Express4DSpace(config)

    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b'Timecode,"",\xff\x00\n' * 50)
    report, png, kept = app.check_upload(str(garbage))
    assert "Rejected" in report and kept is None and not garbage.exists()

    submit = _user_errors(app.submit)
    first = _upload(tmp_path / "first.csv", _values())
    submit(str(first), CAPTION, "", True, "")
    duplicate = _upload(tmp_path / "dup.csv", _values(), padding=5)
    with pytest.raises(gr.Error, match="already contributed"):
        submit(str(duplicate), CAPTION, "", True, "")
    assert not duplicate.exists()
    other = _upload(tmp_path / "other.csv", _values(seed=2))
    report, _, kept = app.check_upload(str(other))
    assert "Accepted" in report and "store is full (1 of 1 takes)" in report and kept is None
    assert not other.exists()  # told at once, before writing a caption, and not kept
    other = _upload(tmp_path / "other.csv", _values(seed=2))
    with pytest.raises(gr.Error, match="store is full"):
        submit(str(other), CAPTION, "", True, "")
    assert not other.exists()

    monkeypatch.setenv("EXPRESS4D_CONTRIBUTIONS_MAX_TAKES", "many")
    with pytest.raises(ValueError, match="EXPRESS4D_CONTRIBUTIONS_MAX_TAKES='many'"):
        SpaceConfig.from_env()
    assert os.environ["EXPRESS4D_CONTRIBUTIONS_MAX_BYTES"] == "0"
