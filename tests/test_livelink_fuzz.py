"""The reader's contract (issue 16): any input gives a sane FaceMotion or a LiveLinkFormatError naming file, line,
column and fix. A fixed-seed fuzz corpus (bench/fuzz_livelink.py) plus the cases the first campaign found."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from express4d_hf.core.arkit import CHANNELS
from express4d_hf.livelink import (
    MAX_TAKE_SECONDS,
    FaceMotion,
    LiveLinkFileNotFoundError,
    LiveLinkFormatError,
    _interpolate_short_gaps,
    format_timecode,
    read_livelink_csv,
)

ROOT = Path(__file__).resolve().parents[1]


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_livelink", ROOT / "bench" / "fuzz_livelink.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_livelink"] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()
HEADER = "Timecode,BlendShapeCount," + ",".join(CHANNELS)


def _row(frame: int, value: float = 0.25, rate: int = 60, cells: list[str] | None = None) -> str:
    cells = cells or [f"{value:.6g}"] * 61
    return ",".join([format_timecode(frame, rate), "61"] + cells)


def _csv(rows: list[str], newline: str = "\n") -> str:
    return newline.join([HEADER] + rows) + newline


def _read_text(text: str, **kwargs):
    return read_livelink_csv(io.StringIO(text), **kwargs)


# --- the fixed-seed corpus ------------------------------------------------------------------------------
def test_seed_takes_read_cleanly(tmp_path):
    for _, data in fuzz.seed_takes():
        for mode in fuzz.MODES:
            assert fuzz.run_case(data, mode, str(tmp_path)) == fuzz.OK


def test_fixed_seed_corpus_only_ok_or_typed_errors(tmp_path):
    outcomes: Counter = Counter()
    used: Counter = Counter()
    modes: Counter = Counter()
    seeds = fuzz.seed_takes()
    broken = []
    for index in range(360):
        data, mode, applied = fuzz.make_case(2026, index, seeds)
        outcome = fuzz.run_case(data, mode, str(tmp_path))
        outcomes[outcome] += 1
        used.update(applied)
        modes[mode] += 1
        if outcome not in (fuzz.OK, fuzz.TYPED):
            broken.append((index, mode, applied, outcome))
    assert not broken, broken[:5]
    assert outcomes[fuzz.OK] > 10 and outcomes[fuzz.TYPED] > 100
    assert set(used) == set(fuzz.MUTATIONS), set(fuzz.MUTATIONS) - set(used)
    assert set(modes) == set(fuzz.MODES)


def test_cases_are_reproducible():
    assert fuzz.make_case(5, 17) == fuzz.make_case(5, 17)
    assert fuzz.make_case(5, 17) != fuzz.make_case(5, 18)


def test_campaign_workers_with_memory_cap_and_timeout():
    result = fuzz.campaign(24, 99, jobs=1, timeout=30, memory_mb=512, progress=False)
    assert sum(result["outcomes"].values()) == 24
    assert set(result["outcomes"]) <= {fuzz.OK, fuzz.TYPED}, result


def test_campaign_worker_timeout_and_death_are_outcomes():
    worker = fuzz._Worker(512 << 20)
    try:
        assert worker.run(b"", "binary stream", timeout=30) == fuzz.TYPED
        long_take = _csv([_row(f) for f in range(3000)]).encode()
        assert worker.run(long_take, "binary stream", timeout=1e-4) == "timeout"
        assert not worker.alive()
    finally:
        worker.kill()
    worker = fuzz._Worker(512 << 20)
    try:
        worker.conn.send(("not a case",))  # the worker fails on it and exits
        assert worker.run(b"", "binary stream", timeout=30).startswith("worker died")
    finally:
        worker.kill()


# --- the outcomes the first campaign found outside the contract ---------------------------------------------
@pytest.mark.parametrize("cell,match", [
    ("1e39", "beyond float32's range"), ("-3.5e38", "beyond float32's range"), ("nan", "not a finite number"),
    ("inf", "not a finite number"), ('""', "is empty"), ("", "is empty"), ("0.5\u2028", "not a number"),
    ("1_0", "not a number"), ("0x10", "not a number"), ('"0.25', "not a number"),
])  # fmt: skip
def test_bad_cells_name_line_column_and_channel(cell, match):
    rows = [_row(f) for f in range(6)]
    cells = ["0.25"] * 61
    cells[4] = cell
    rows[3] = _row(3, cells=cells)
    with pytest.raises(LiveLinkFormatError, match=match) as info:
        _read_text(_csv(rows))
    err = info.value
    assert (err.line, err.column) == (5, 7) and CHANNELS[4] in err.reason and "Fix:" in str(err)


def test_quoted_numbers_and_overshoot_are_kept():
    cells = ['"0.5"'] + ["1.04"] + ["-0.02"] * 59
    m = _read_text(_csv([_row(0), _row(1, cells=cells), _row(2)]))
    assert m.values[1, 0] == pytest.approx(0.5) and m.values[1, 1] == pytest.approx(1.04)
    assert m.values.dtype == np.float32


@pytest.mark.parametrize("rows", [2, 7])
def test_one_far_timecode_is_an_error_naming_its_line(rows):
    lines = [_row(f) for f in range(rows)]
    lines[-1] = _row(60 * 60 * 60 * 4 + 17)  # four hours later
    with pytest.raises(LiveLinkFormatError, match=r"s after line .*rows would span") as info:
        _read_text(_csv(lines))
    assert info.value.line == rows + 1 and info.value.column == 1


def test_take_longer_than_the_maximum_is_an_error():
    # a row every 10 frames at 24 fps is plausible row by row, but the take lasts 30.6 minutes
    rows = [_row(0, rate=24)] + [f"{format_timecode(10 * k, 24)},0" for k in range(1, 4400)]
    with pytest.raises(LiveLinkFormatError, match=f"longer than the {MAX_TAKE_SECONDS // 60} min") as info:
        _read_text(_csv(rows))
    assert info.value.line == 4401


def test_dropped_frames_within_the_plausible_span_are_read():
    frames = [0, 1, 2, 3, 10, 11, 20, 21, 22, 30, 31, 39]  # 28 of 40 frames dropped
    m = _read_text(_csv([_row(f) for f in frames]), on_tracking_loss="mask")
    assert m.fps == 60 and m.num_frames == 40 and m.valid.sum() == 12


def test_duplicate_timecodes_are_an_error_naming_both_lines():
    lines = [_row(f) for f in range(5)]
    lines.insert(3, lines[2])
    with pytest.raises(LiveLinkFormatError, match="repeats the one on line 4") as info:
        _read_text(_csv(lines))
    assert info.value.line == 5


def test_rows_going_backwards():
    lines = [_row(f) for f in range(5)]
    lines[1], lines[3] = lines[3], lines[1]
    with pytest.raises(LiveLinkFormatError, match="goes backwards") as info:
        _read_text(_csv(lines))
    assert info.value.line == 4


def test_mixed_cr_crlf_lf_line_endings_read():
    rows = [_row(f) for f in range(8)]
    text = HEADER + "\r" + "\r\n".join(rows[:4]) + "\r" + "\n".join(rows[4:]) + "\r\n"
    m = _read_text(text)
    assert m.num_frames == 8 and m.valid.all()


def test_field_count_message_is_truthful():
    rows = [_row(f) for f in range(6)]
    rows[1] += ",0.5,0.5"  # longer rows: unnamed trailing cells are ignored, not an error
    rows[4] = ",".join(rows[4].split(",")[:40])
    with pytest.raises(LiveLinkFormatError, match="row has 40 fields but the header has 63") as info:
        _read_text(_csv(rows))
    assert info.value.line == 6
    rows[4] = _row(4)
    assert _read_text(_csv(rows)).num_frames == 6


@pytest.mark.parametrize("data,match,line", [
    (b"\xef\xbb\xbf", "empty file", 1),
    (b"", "empty file", 1),
    (b"\xff\xfeT\x00i\x00", "UTF-16", 1),
    (HEADER.encode() + b"\n" + _row(0).encode().replace(b"0.25", b"0.2\xe95", 1) + b"\n", "not UTF-8", 2),
    (HEADER.encode() + b"\n" + _row(0).encode()[:30] + b"\x00" + _row(0).encode()[30:], "NUL", 2),
])  # fmt: skip
def test_bytes_problems_by_path_and_binary_stream(tmp_path, data, match, line):
    path = tmp_path / "take.csv"
    path.write_bytes(data)
    for source, name in ((path, str(path)), (io.BytesIO(data), "<stream>")):
        with pytest.raises(LiveLinkFormatError, match=match) as info:
            read_livelink_csv(source)
        assert info.value.line == line and str(info.value).startswith(name)


def test_non_utf8_text_stream_is_a_typed_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(_csv([_row(0), _row(1)]).encode().replace(b"0.25", b"\xe9", 1))
    with open(path, encoding="utf-8") as f, pytest.raises(LiveLinkFormatError, match="not UTF-8") as info:
        read_livelink_csv(f)
    assert str(info.value).startswith(str(path))
    with pytest.raises(LiveLinkFormatError, match="not UTF-8"):
        read_livelink_csv(io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding="utf-8"))


def test_path_problems_are_typed(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(LiveLinkFileNotFoundError, match="no such file"):
        read_livelink_csv(missing)
    with pytest.raises(FileNotFoundError):  # still an OSError for callers that catch those
        read_livelink_csv(missing)
    with pytest.raises(LiveLinkFormatError, match="not a usable path"):
        read_livelink_csv(str(tmp_path / "a\0b.csv"))
    if os.geteuid() != 0:
        locked = tmp_path / "locked.csv"
        locked.write_text(_csv([_row(0)]))
        locked.chmod(0)
        with pytest.raises(LiveLinkFormatError, match="cannot be read"):
            read_livelink_csv(locked)


def test_errors_pickle_with_their_fields():
    import pickle

    err = pickle.loads(pickle.dumps(LiveLinkFormatError("f.csv", "bad", 3, 4, "fix it")))
    assert (err.source, err.line, err.column, err.fix) == ("f.csv", 3, 4, "fix it")
    assert str(err) == "f.csv, line 3, column 4: bad. Fix: fix it"


def test_max_abs_value_names_line_and_column():
    cells = ["0.25"] * 61
    cells[55] = "57.3"  # degrees, not radians
    text = _csv([_row(0), _row(1, cells=cells)])
    assert _read_text(text).values[1, 55] == pytest.approx(57.3)
    with pytest.raises(LiveLinkFormatError, match="plausible magnitude") as info:
        _read_text(text, max_abs_value=10.0)
    assert (info.value.line, info.value.column) == (3, 58)


# --- linear-time gap interpolation ------------------------------------------------------------------------
def _naive_interpolation(values, valid, max_gap):
    out = values.copy()
    idx = np.flatnonzero(valid)
    n = len(valid)
    f = 0
    while f < n:
        if valid[f]:
            f += 1
            continue
        end = f
        while end < n and not valid[end]:
            end += 1
        if end - f <= max_gap:
            before, after = idx[idx < f], idx[idx >= end]
            for k in range(f, end):
                if before.size and after.size:
                    a, b = before[-1], after[0]
                    w = (k - a) / (b - a)
                    out[k] = (1 - w) * values[a] + w * values[b]
                else:
                    out[k] = values[before[-1] if before.size else after[0]]
        f = end
    return out


def test_gap_interpolation_matches_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 200))
        values = rng.random((n, 61)).astype(np.float32)
        valid = rng.random(n) < rng.uniform(0.2, 0.9)
        if not valid.any():
            continue
        values[~valid] = 0
        expected = _naive_interpolation(values, valid, max_gap=3)
        got = values.copy()
        _interpolate_short_gaps(got, valid, max_gap=3)
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_gap_interpolation_is_linear_time():
    n = 160_000
    values = np.random.default_rng(1).random((n, 61)).astype(np.float32)
    valid = np.arange(n) % 2 == 0  # every other frame lost: 80,000 gaps
    t0 = time.perf_counter()
    _interpolate_short_gaps(values, valid, max_gap=30)
    assert time.perf_counter() - t0 < 2.0  # the quadratic version took 10 s
    np.testing.assert_allclose(values[1], (values[0] + values[2]) / 2, atol=1e-6)


def test_read_result_satisfies_the_contract():
    rows = [_row(f, value=0.1 * (f % 7)) for f in range(30)]
    rows[10] = rows[10].split(",")[0] + ",0"
    m = _read_text(_csv(rows))
    assert isinstance(m, FaceMotion) and m.values.dtype == np.float32 and np.isfinite(m.values).all()
    assert m.fps == 60 and m.num_frames == 30 and not m.valid[10]
