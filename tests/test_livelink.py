"""Live Link Face CSV reading (every variant of DESIGN.md), writing, and FaceMotion transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest

from express4d_hf import ARKIT_CHANNELS, FaceMotion, LiveLinkFormatError, read_livelink_csv
from express4d_hf.core.arkit import (
    BLENDSHAPES,
    CHANNEL_INDEX,
    CHANNELS,
    COMPOSITE_REGIONS,
    HEAD_ROTATION,
    REGIONS,
    SYMMETRIC_CHANNELS,
    apple_name,
    canonical_channel_name,
    mirror_caption,
    mirror_values,
)
from express4d_hf.livelink import format_timecode, write_livelink_csv


def make_csv(
    values: np.ndarray,
    *,
    fps: int = 60,
    tc_rate: int = 60,
    names: list[str] | None = None,
    count_header: str = "BlendShapeCount",
    order: list[int] | None = None,
    lost_rows: tuple[int, ...] = (),
    dropped: tuple[int, ...] = (),
    newline: str = "\n",
    extra_columns: int = 0,
    fmt=lambda x: f"{x:.6f}",
    start_frame: int = 0,
) -> str:
    """A Live Link Face CSV like the app writes, with optional real-world quirks."""
    names = list(names or CHANNELS)
    order = list(order if order is not None else range(61))
    header = ["Timecode", count_header] + [names[i] for i in order] + [f"Emotion{k}" for k in range(extra_columns)]
    lines = [",".join(header)]
    step = tc_rate // fps  # a 30 fps take on a 60 fps timecode steps FF by 2
    for f in range(len(values)):
        if f in dropped:
            continue
        frame = (start_frame + f) * step
        tc = format_timecode(frame, tc_rate)[:-4] + ".123"  # the sub-frame fraction is not milliseconds
        if f in lost_rows:
            lines.append(f"{tc},0")
            continue
        cells = [fmt(values[f, i]) for i in order] + ["0.5"] * extra_columns
        lines.append(",".join([tc, "61"] + cells))
    return newline.join(lines) + newline


@pytest.fixture
def values() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(90)[:, None] / 60.0
    v = 0.5 + 0.4 * np.sin(2 * np.pi * (0.5 + rng.random((1, 61))) * t)
    return v.astype(np.float32)


def read(text: str, **kwargs) -> FaceMotion:
    return read_livelink_csv(io.StringIO(text), **kwargs)


# --- arkit -----------------------------------------------------------------------------------------
def test_channels_order_and_groups():
    assert ARKIT_CHANNELS == CHANNELS and len(CHANNELS) == 61
    assert CHANNEL_INDEX["JawRight"] < CHANNEL_INDEX["JawLeft"]  # CSV order, not the ARKit enum order
    assert len(BLENDSHAPES) == 52 and BLENDSHAPES[-1] == "TongueOut"
    base = [c for name, channels in REGIONS.items() if name not in COMPOSITE_REGIONS for c in channels]
    assert sorted(base) == sorted(CHANNELS)  # the base regions partition the 61 channels
    upper, lower = set(REGIONS["upper_face"]), set(REGIONS["lower_face"])
    assert not upper & lower and upper | lower == set(CHANNELS) - set(HEAD_ROTATION)
    assert {"BrowInnerUp", "EyeBlinkLeft", "CheekSquintLeft", "NoseSneerRight", "LeftEyeYaw"} <= upper
    assert {"JawOpen", "MouthSmileLeft", "CheekPuff", "TongueOut"} <= lower


@pytest.mark.parametrize(
    "name,expected",
    [("eyeBlink_L", "EyeBlinkLeft"), ("mouthSmile_R", "MouthSmileRight"), ("jawLeft", "JawLeft"),
     ("EYEBLINKLEFT", "EyeBlinkLeft"), ("browOuterUpRight", "BrowOuterUpRight"), ("headYaw", "HeadYaw")],
)  # fmt: skip
def test_name_styles(name, expected):
    assert canonical_channel_name(name) == expected


def test_apple_names_round_trip():
    for channel in BLENDSHAPES:
        assert canonical_channel_name(apple_name(channel)) == channel
    assert apple_name("MouthLeft") == "mouthLeft" and apple_name("EyeBlinkRight") == "eyeBlink_R"


def test_unknown_name_raises():
    with pytest.raises(KeyError, match="Smirk"):
        canonical_channel_name("Smirk")


def test_mirror_is_an_involution_and_swaps_sides(values):
    assert np.array_equal(mirror_values(mirror_values(values)), values)
    mirrored = mirror_values(values)
    assert np.array_equal(mirrored[:, CHANNEL_INDEX["EyeBlinkRight"]], values[:, CHANNEL_INDEX["EyeBlinkLeft"]])
    assert np.array_equal(mirrored[:, CHANNEL_INDEX["HeadYaw"]], -values[:, CHANNEL_INDEX["HeadYaw"]])
    assert np.array_equal(mirrored[:, CHANNEL_INDEX["RightEyeYaw"]], -values[:, CHANNEL_INDEX["LeftEyeYaw"]])
    assert np.array_equal(mirrored[:, CHANNEL_INDEX["RightEyePitch"]], values[:, CHANNEL_INDEX["LeftEyePitch"]])
    for name in SYMMETRIC_CHANNELS:
        assert np.array_equal(mirrored[:, CHANNEL_INDEX[name]], values[:, CHANNEL_INDEX[name]])
    assert set(SYMMETRIC_CHANNELS) == {
        "JawForward", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRollLower", "MouthRollUpper",
        "MouthShrugLower", "MouthShrugUpper", "BrowInnerUp", "CheekPuff", "TongueOut", "HeadPitch",
    }  # fmt: skip


def test_caption_mirror_whole_words():
    assert mirror_caption("Left eye winks, then the RIGHT brow; bright leftover") == (
        "Right eye winks, then the LEFT brow; bright leftover"
    )
    assert mirror_caption(mirror_caption("turns left and right")) == "turns left and right"


def test_facemotion_mirror_twice_is_identity(values):
    m = FaceMotion(values, caption="A person winks their left eye")
    once = m.mirror()
    assert once.caption == "A person winks their right eye"
    twice = once.mirror()
    assert np.array_equal(twice.values, m.values) and twice.caption == m.caption


# --- reading -----------------------------------------------------------------------------------------
def test_round_trip_within_print_precision(values, tmp_path):
    m = FaceMotion(values, fps=60, start_timecode="10:20:30:15.000", caption="x")
    path = tmp_path / "take.csv"
    write_livelink_csv(m, path)
    back = read_livelink_csv(path)
    assert back.fps == 60 and back.num_frames == m.num_frames and back.valid.all()
    np.testing.assert_allclose(back.values, m.values, rtol=1e-6, atol=1e-7)
    assert back.start_timecode.startswith("10:20:30:15")
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_header_variants_and_column_order(values):
    shuffled = list(np.random.default_rng(1).permutation(61))
    for names in (list(CHANNELS), [c[0].lower() + c[1:] for c in CHANNELS]):
        text = make_csv(values, names=names, count_header="BlendshapeCount", order=shuffled)
        np.testing.assert_allclose(read(text).values, values, atol=1e-6)


def test_apple_raw_names(values):
    names = [apple_name(c) if c in BLENDSHAPES else c for c in CHANNELS]
    np.testing.assert_allclose(read(make_csv(values, names=names)).values, values, atol=1e-6)


def test_30fps_take_on_60fps_timecode(values):
    m = read(make_csv(values[:60], fps=30, tc_rate=60))
    assert m.fps == 30 and m.num_frames == 60 and m.valid.all()
    assert m.metadata["timecode_rate"] == 60


def test_30fps_timecode_rate(values):
    assert read(make_csv(values[:45], fps=30, tc_rate=30)).fps == 30


def test_dropped_frames_become_invalid_and_interpolated(values):
    m = read(make_csv(values, dropped=(10, 11)))
    assert m.num_frames == 90 and not m.valid[10] and not m.valid[11] and m.valid[12]
    expected = values[9] + (values[12] - values[9]) * (1 / 3)
    np.testing.assert_allclose(m.values[10], expected, atol=1e-5)


def test_tracking_lost_rows_policies(values):
    text = make_csv(values, lost_rows=(20, 21, 22))
    interp = read(text)
    assert interp.valid.sum() == 87 and interp.metadata["lost_frames"] == 3
    assert np.all(interp.values[21] != 0)
    masked = read(text, on_tracking_loss="mask")
    assert np.all(masked.values[21] == 0) and not masked.valid[21]
    with pytest.raises(LiveLinkFormatError, match="tracking lost"):
        read(text, on_tracking_loss="raise")


def test_long_gap_not_interpolated(values):
    m = read(make_csv(values, lost_rows=tuple(range(10, 60))), max_gap_s=0.5)
    assert np.all(m.values[30] == 0) and not m.valid[10:60].any()


def test_leading_lost_rows_hold_first_valid(values):
    m = read(make_csv(values, lost_rows=(0, 1)))
    np.testing.assert_allclose(m.values[0], values[2], atol=1e-6)


def test_out_of_range_values_kept(values):
    v = values.copy()
    v[5, 0], v[6, 1] = 1.08, -0.0001
    m = read(make_csv(v))
    assert m.values[5, 0] == pytest.approx(1.08) and m.values[6, 1] == pytest.approx(-0.0001)


def test_crlf_extra_columns_python_repr(values):
    text = make_csv(values, newline="\r\n", extra_columns=7, fmt=lambda x: f"np.float32({float(x)!r})")
    m = read(text)
    np.testing.assert_allclose(m.values, values, atol=1e-6)
    assert m.metadata["ignored_columns"][0] == "Emotion0"


def test_repr_floats_scientific(values):
    v = values.copy()
    v[:, 3] = 1.2345e-05
    np.testing.assert_allclose(read(make_csv(v, fmt=repr)).values, v, rtol=1e-6)


def test_missing_channels_error_or_fill(values):
    order = [i for i in range(61) if CHANNELS[i] not in ("TongueOut", "HeadYaw")]
    text = make_csv(values, order=order)
    with pytest.raises(LiveLinkFormatError, match=r"2 of the 61 .*TongueOut.*fill_missing=True"):
        read(text)
    m = read(text, fill_missing=True)
    assert np.all(m.channel("TongueOut") == 0) and m.metadata["filled_channels"] == ["TongueOut", "HeadYaw"]


@pytest.mark.parametrize(
    "mutate,match,line",
    [
        (lambda ls: ls.__setitem__(4, ls[4].replace("0.", "abc", 1)), "not a number", 5),
        (lambda ls: ls.__setitem__(3, "garbage" + ls[3][11:]), "timecode", 4),
        (lambda ls: ls.__setitem__(6, ",".join(ls[6].split(",")[:30])), "30 fields", 7),
        (lambda ls: ls.__setitem__(0, "Frame," + ls[0]), "Timecode", 1),
    ],
)
def test_errors_name_file_and_line(values, tmp_path, mutate, match, line):
    lines = make_csv(values).splitlines()
    mutate(lines)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LiveLinkFormatError, match=match) as info:
        read_livelink_csv(path)
    assert info.value.line == line and str(path) in str(info.value)


def test_empty_and_header_only(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(LiveLinkFormatError, match="empty"):
        read_livelink_csv(path)
    path.write_text("Timecode,BlendShapeCount," + ",".join(CHANNELS) + "\n")
    with pytest.raises(LiveLinkFormatError, match="no frames"):
        read_livelink_csv(path)


def test_take_folder_without_csv(tmp_path):
    (tmp_path / "take.mov").write_bytes(b"")
    (tmp_path / "take.json").write_text("{}")
    (tmp_path / "frame_log.csv").write_text("Timecode\n")
    with pytest.raises(LiveLinkFormatError, match="no blendshape CSV.*frame_log.csv"):
        read_livelink_csv(tmp_path)


def test_take_folder_with_csv(values, tmp_path):
    (tmp_path / "frame_log.csv").write_text("Timecode\n")
    write_livelink_csv(FaceMotion(values), tmp_path / "MySlate_1_iPhone.csv")
    assert read_livelink_csv(tmp_path).num_frames == 90


# --- FaceMotion transforms ------------------------------------------------------------------------
def test_resample_preserves_slow_sine():
    t = np.arange(600) / 60.0
    v = np.zeros((600, 61), np.float32)
    v[:, 0] = 0.5 + 0.4 * np.sin(2 * np.pi * 0.7 * t)
    down = FaceMotion(v, fps=60).resample(20)
    assert down.num_frames == 200 and down.fps == 20
    expected = 0.5 + 0.4 * np.sin(2 * np.pi * 0.7 * np.arange(200) / 20.0)
    np.testing.assert_allclose(down.values[:, 0], expected, atol=0.01)
    up = down.resample(60)
    assert up.num_frames == 600
    np.testing.assert_allclose(up.values[5:-5, 0], v[5:-5, 0], atol=0.01)


def test_resample_is_anti_aliased():
    # A 25 Hz wobble is above the 10 Hz Nyquist rate of 20 fps: slicing would alias it, filtering removes it.
    v = np.zeros((600, 61), np.float32)
    v[:, 0] = 0.3 * np.sin(2 * np.pi * 25 * np.arange(600) / 60.0)
    filtered = FaceMotion(v, fps=60).resample(20).values[10:-10, 0]
    sliced = v[::3, 0][10:-10]
    assert np.abs(filtered).max() < 0.05 < np.abs(sliced).max()


@pytest.mark.parametrize("fps_in, fps_out", [(60, 20), (59.94, 20), (30, 20), (20, 60), (60, 25)])
def test_resample_with_the_cached_filter_equals_scipys_default_design(fps_in, fps_out):
    from fractions import Fraction

    from scipy.signal import resample_poly

    values = np.random.default_rng(0).random((301, 61)).astype(np.float32)
    ratio = Fraction(fps_out / fps_in).limit_denominator(1000)
    expected = resample_poly(values.astype(np.float64), ratio.numerator, ratio.denominator, axis=0, padtype="line")
    got = FaceMotion(values, fps=fps_in).resample(fps_out).values
    np.testing.assert_array_equal(got, expected[: len(got)].astype(np.float32))


def test_crop_and_timecode(values):
    m = FaceMotion(values, fps=60, start_timecode="00:00:01:00.000")
    c = m.crop(60, 90)
    assert c.num_frames == 30 and c.start_timecode.startswith("00:00:02:00")
    with pytest.raises(ValueError):
        m.crop(10, 200)


def test_numpy_torch_dict_conversions(values):
    m = FaceMotion(values, fps=20, caption="c")
    assert np.array_equal(FaceMotion.from_torch(m.to_torch(), fps=20).values, values)
    back = FaceMotion.from_dict(m.to_dict())
    np.testing.assert_allclose(back.values, values, atol=1e-6)
    assert back.caption == "c" and back.fps == 20


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\[frames, 61\]"):
        FaceMotion(np.zeros((10, 52)))
    with pytest.raises(ValueError, match="fps"):
        FaceMotion(np.zeros((10, 61)), fps=0)


def test_csv_written_at_60fps_from_20fps(values):
    m = FaceMotion(values[:40], fps=20)
    buf = io.StringIO()
    write_livelink_csv(m, buf)
    back = read(buf.getvalue())
    assert back.fps == 60 and back.num_frames == 120
    header = buf.getvalue().splitlines()[0].split(",")
    assert header[:3] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft"]


def test_short_take_within_one_second_defaults_to_60fps_timecode(values):
    m = read(make_csv(values[:30]))  # FF 0..29 only: no second boundary to tell the timecode rate
    assert m.fps == 60 and m.num_frames == 30
