"""``FaceMotion`` and the Live Link Face CSV format (read and write).

A Live Link Face CSV has one row per frame: ``Timecode``, ``BlendShapeCount`` (newer app versions
spell it ``BlendshapeCount``), then 61 float channels. The reader maps columns by name
(case-insensitively, PascalCase, camelCase or Apple raw names), infers the capture rate from the
timecodes, re-inserts dropped frames and "tracking lost" rows (``<timecode>,0``) as invalid frames,
and raises :class:`LiveLinkFormatError` naming the file, line and fix for anything else.

>>> import numpy as np, io
>>> m = FaceMotion(np.zeros((120, 61), np.float32), fps=60, caption="A person is smiling")
>>> buf = io.StringIO(); m.to_livelink_csv(buf); _ = buf.seek(0)
>>> back = read_livelink_csv(buf)
>>> back.num_frames, back.fps, round(back.duration, 2)
(120, 60.0, 2.0)
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from .arkit import CHANNELS, NUM_CHANNELS, mirror_caption, mirror_values, try_canonical_channel_name

STANDARD_FPS = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0)
TrackingLossPolicy = Literal["interpolate", "mask", "raise"]


class LiveLinkFormatError(ValueError):
    """A Live Link Face file that cannot be read; the message names the file, line and fix."""

    def __init__(self, source: str, reason: str, line: int | None = None):
        self.source, self.reason, self.line = source, reason, line
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


# --- timecodes ------------------------------------------------------------------------------------
def format_timecode(frame: int, rate: int, start_frame: int = 0) -> str:
    """``HH:MM:SS:FF.000`` of frame ``start_frame + frame`` at an integer timecode ``rate``."""
    f = start_frame + frame
    ff, s = f % rate, f // rate
    return f"{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}.000"


_TIMECODE_RE = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})[:;](\d{1,3})(?:\.(\d+))?\s*$")


def _infer_fps(seconds: np.ndarray) -> float | None:
    steps = np.diff(seconds)
    steps = steps[steps > 1e-6]
    if steps.size == 0:
        return None
    # The smallest common step is one frame period; dropped frames make some steps multiples of it.
    period = float(np.percentile(steps, 25))
    return min(STANDARD_FPS, key=lambda r: abs(1.0 / r - period))


# --- FaceMotion --------------------------------------------------------------------------------------
@dataclasses.dataclass
class FaceMotion:
    """A facial performance: ``values`` is ``[frames, 61]`` float32 in :data:`~express4d_hf.arkit.CHANNELS` order.

    Attributes:
        values: per-frame channel values (blendshapes nominally in [0, 1], rotations in radians).
        fps: frame rate in frames per second.
        start_timecode: timecode of the first frame (``HH:MM:SS:FF.fff``), kept for round trips.
        valid: per-frame bool mask, False where tracking was lost (values there are interpolated or 0).
        caption: the text instruction this motion performs, if any.
        metadata: free-form JSON-serialisable information (source file, performer, notes).
    """

    values: np.ndarray
    fps: float = 60.0
    start_timecode: str = "00:00:00:00.000"
    valid: np.ndarray | None = None
    caption: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != NUM_CHANNELS:
            raise ValueError(f"FaceMotion.values must be [frames, {NUM_CHANNELS}], got shape {values.shape}")
        self.values = np.ascontiguousarray(values)
        if self.fps is None or not float(self.fps) > 0:
            raise ValueError(f"FaceMotion.fps must be positive, got {self.fps!r}")
        self.fps = float(self.fps)
        if self.valid is None:
            self.valid = np.ones(len(values), dtype=bool)
        else:
            self.valid = np.asarray(self.valid, dtype=bool)
            if self.valid.shape != (len(values),):
                raise ValueError(f"FaceMotion.valid must have shape ({len(values)},), got {self.valid.shape}")

    # -- basic properties
    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps

    def __len__(self) -> int:
        return self.num_frames

    def channel(self, name: str) -> np.ndarray:
        """The curve of one channel (any naming style)."""
        canonical = try_canonical_channel_name(name)
        if canonical is None:
            raise KeyError(f"{name!r} is not an ARKit channel")
        return self.values[:, CHANNELS.index(canonical)]

    def replace(self, **changes: Any) -> FaceMotion:
        """A copy with some fields changed (metadata is copied, not shared)."""
        changes.setdefault("metadata", dict(self.metadata))
        return dataclasses.replace(self, **changes)

    # -- transforms
    def resample(self, fps: float) -> FaceMotion:
        """Resample to ``fps`` with an anti-aliasing polyphase filter (not plain frame slicing).

        The valid mask follows the nearest source frame.
        """
        fps = float(fps)
        if math.isclose(fps, self.fps):
            return self.replace()
        ratio = Fraction(fps / self.fps).limit_denominator(1000)
        up, down = ratio.numerator, ratio.denominator
        n_out = max(1, math.ceil(self.num_frames * up / down))
        if self.num_frames < 2:
            values = np.repeat(self.values, n_out, axis=0)
        else:
            from scipy.signal import resample_poly

            # padtype="line" avoids ringing towards zero at the clip edges.
            values = resample_poly(self.values.astype(np.float64), up, down, axis=0, padtype="line")[:n_out]
        src = np.minimum((np.arange(n_out) * self.fps / fps).round().astype(int), self.num_frames - 1)
        return self.replace(values=values.astype(np.float32), fps=fps, valid=self.valid[src])

    def crop(self, start: int = 0, stop: int | None = None) -> FaceMotion:
        """Frames ``[start, stop)``; the start timecode moves with the crop."""
        stop = self.num_frames if stop is None else stop
        if not 0 <= start < max(stop, 1) or stop > self.num_frames:
            raise ValueError(f"crop [{start}, {stop}) is outside a motion of {self.num_frames} frames")
        timecode = self.start_timecode
        if start:
            rate = int(round(self.fps))
            timecode = format_timecode(start, rate, _timecode_to_frames(self.start_timecode, rate))
        return self.replace(values=self.values[start:stop], valid=self.valid[start:stop], start_timecode=timecode)

    def mirror(self) -> FaceMotion:
        """Left/right mirror of the motion and of its caption (whole words)."""
        caption = mirror_caption(self.caption) if self.caption else self.caption
        return self.replace(values=mirror_values(self.values), caption=caption)

    # -- conversions
    def to_numpy(self) -> np.ndarray:
        return self.values

    @classmethod
    def from_numpy(cls, values: np.ndarray, fps: float = 60.0, **kwargs: Any) -> FaceMotion:
        return cls(np.asarray(values, dtype=np.float32), fps=fps, **kwargs)

    def to_torch(self, device: Any = None):
        import torch

        return torch.from_numpy(self.values.copy()).to(device)

    @classmethod
    def from_torch(cls, tensor, fps: float = 60.0, **kwargs: Any) -> FaceMotion:
        return cls(tensor.detach().float().cpu().numpy(), fps=fps, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (values as nested lists, channel names included)."""
        return {
            "fps": self.fps,
            "channels": list(CHANNELS),
            "start_timecode": self.start_timecode,
            "caption": self.caption,
            "metadata": self.metadata,
            "valid": self.valid.tolist(),
            "values": np.round(self.values.astype(np.float64), 6).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceMotion:
        if list(data.get("channels", CHANNELS)) != list(CHANNELS):
            raise ValueError("FaceMotion JSON channels differ from express4d_hf.arkit.CHANNELS")
        return cls(
            np.asarray(data["values"], dtype=np.float32).reshape(-1, NUM_CHANNELS),
            fps=data["fps"],
            start_timecode=data.get("start_timecode", "00:00:00:00.000"),
            valid=np.asarray(data["valid"], dtype=bool) if "valid" in data else None,
            caption=data.get("caption"),
            metadata=data.get("metadata") or {},
        )

    # -- writing
    def to_livelink_csv(self, path: str | os.PathLike | IO[str], fps: float | None = 60.0) -> None:
        """Write a Live Link Face CSV that Live Link importers (Unreal, Blender, Maya) accept.

        The motion is resampled to ``fps`` (60 by default, ``None`` keeps its rate) and given its own
        continuous timecodes starting at ``start_timecode``. Files are written atomically.
        """
        motion = self if fps is None else self.resample(fps)
        rate = int(round(motion.fps))
        start = _timecode_to_frames(self.start_timecode, rate)
        timecodes = [format_timecode(i, rate, start) for i in range(motion.num_frames)]
        body = io.StringIO()
        # 7 significant digits is float32's precision: the round trip is exact to print precision.
        np.savetxt(body, motion.values, fmt="%.7g", delimiter=",")
        rows = body.getvalue().splitlines()
        header = "Timecode,BlendShapeCount," + ",".join(CHANNELS)
        text = header + "\n" + "".join(f"{tc},{NUM_CHANNELS},{row}\n" for tc, row in zip(timecodes, rows))
        if hasattr(path, "write"):
            path.write(text)  # type: ignore[union-attr]
            return
        atomic_write_text(Path(path), text)

    def to_gltf(self, path: str | os.PathLike, head: Any = None, fps: float | None = None) -> Path:
        """Write an animated GLB of the Face Cap head performing this motion (and its licence notice beside it).

        See :func:`express4d_hf.export.gltf.motion_to_gltf` (imported lazily: the exporter is a higher layer).
        """
        from .export.gltf import motion_to_gltf

        return motion_to_gltf(self, path, head=head, fps=fps)


def _timecode_to_frames(timecode: str, rate: int) -> int:
    match = _TIMECODE_RE.match(timecode or "")
    if match is None:
        return 0
    h, m, s, ff, _ = match.groups()
    return (int(h) * 3600 + int(m) * 60 + int(s)) * rate + min(int(ff), rate - 1)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_folder(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is moved aside first, restored if the
    rename fails, and deleted after, so ``out`` is never half-written."""
    import shutil
    import uuid

    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- reading ---------------------------------------------------------------------------------------
_NP_FLOAT_REPR = re.compile(r"(?:np|numpy)\.float(?:16|32|64)?\(([^()]*)\)")
_NON_TAKE_CSVS = {"frame_log.csv"}


def find_take_csv(folder: str | os.PathLike) -> Path:
    """The blendshape CSV inside a Live Link Face take folder, or a clear error when there is none."""
    folder = Path(folder)
    csvs = sorted(p for p in folder.glob("*.csv") if p.name.lower() not in _NON_TAKE_CSVS)
    if len(csvs) == 1:
        return csvs[0]
    if not csvs:
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise LiveLinkFormatError(
            str(folder),
            f"no blendshape CSV in this take folder (it holds {present}). Newer Live Link Face versions "
            "record only video, JSON and frame_log.csv in 'MetaHuman Animator' mode; record in 'Live Link "
            "(ARKit)' mode or export the take's CSV from the app.",
        )
    raise LiveLinkFormatError(str(folder), f"several CSVs in this take folder ({[p.name for p in csvs]}); pass one")


def read_livelink_csv(
    source: str | os.PathLike | IO[str],
    *,
    on_tracking_loss: TrackingLossPolicy = "interpolate",
    max_gap_s: float = 0.5,
    fill_missing: bool = False,
    fps: float | None = None,
    caption: str | None = None,
) -> FaceMotion:
    """Read a Live Link Face CSV (path, take folder or open text file) into a :class:`FaceMotion`.

    Args:
        source: a ``.csv`` path, a take folder holding one, or a file object.
        on_tracking_loss: frames with no data ("tracking lost" rows ``<timecode>,0`` and dropped
            frames) are always marked ``valid=False``. ``"interpolate"`` fills gaps of at most
            ``max_gap_s`` seconds linearly (longer gaps stay 0); ``"mask"`` leaves them all 0;
            ``"raise"`` raises :class:`LiveLinkFormatError` at the first lost frame.
        max_gap_s: longest gap, in seconds, that ``"interpolate"`` fills.
        fill_missing: fill channels the file lacks with zeros (recorded in ``metadata``) instead of
            raising.
        fps: the capture rate, when the timecodes cannot tell (single-row files); inferred otherwise.
        caption: stored on the returned motion.
    """
    if hasattr(source, "read"):
        name = getattr(source, "name", "<stream>")
        text = source.read()  # type: ignore[union-attr]
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig")
    else:
        path = Path(source)
        if path.is_dir():
            path = find_take_csv(path)
        name = str(path)
        if not path.exists():
            raise FileNotFoundError(f"{name}: no such file")
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return _parse_livelink_text(
        text, name, on_tracking_loss=on_tracking_loss, max_gap_s=max_gap_s, fill_missing=fill_missing,
        fps=fps, caption=caption,
    )  # fmt: skip


def _parse_livelink_text(
    text: str,
    source: str,
    *,
    on_tracking_loss: TrackingLossPolicy,
    max_gap_s: float,
    fill_missing: bool,
    fps: float | None,
    caption: str | None,
) -> FaceMotion:
    if on_tracking_loss not in ("interpolate", "mask", "raise"):
        raise ValueError(f"on_tracking_loss must be 'interpolate', 'mask' or 'raise', got {on_tracking_loss!r}")
    if "\n" not in text and "\r" in text:  # classic-Mac line endings
        text = text.replace("\r", "\n")
    header_line, _, body = text.partition("\n")
    header = [h.strip().strip('"') for h in header_line.rstrip("\r").split(",")]
    if not header_line.strip():
        raise LiveLinkFormatError(source, "empty file (expected a header starting with 'Timecode')", 1)
    if header[0].lower() != "timecode":
        raise LiveLinkFormatError(source, f"first column is {header[0]!r}, expected 'Timecode'", 1)

    column_of: dict[str, int] = {}  # canonical channel -> column in the file
    ignored: list[str] = []
    for col, head in enumerate(header[1:], start=1):
        if head.lower() in ("blendshapecount", "blendshapescount"):
            continue
        canonical = try_canonical_channel_name(head)
        if canonical is None:
            ignored.append(head)
        elif canonical in column_of:
            raise LiveLinkFormatError(source, f"channel {canonical} appears twice (columns {column_of[canonical]}, {col})", 1)
        else:
            column_of[canonical] = col
    missing = [c for c in CHANNELS if c not in column_of]
    if missing and not fill_missing:
        raise LiveLinkFormatError(
            source,
            f"{len(missing)} of the 61 ARKit channels are missing ({', '.join(missing[:6])}"
            f"{', ...' if len(missing) > 6 else ''}); pass fill_missing=True to fill them with zeros",
            1,
        )
    if "float" in body:  # Python-repr floats such as np.float32(0.25)
        body = _NP_FLOAT_REPR.sub(r"\1", body)

    if not body.strip():
        raise LiveLinkFormatError(source, "the file has a header but no frames")
    channel_cols = sorted(column_of.values())
    timecodes, table, lost_timecodes = _read_rows(body, len(header), channel_cols, source, text)
    if len(timecodes) + len(lost_timecodes) == 0:
        raise LiveLinkFormatError(source, "the file has a header but no frames")
    all_timecodes = timecodes + lost_timecodes
    try:
        seconds, tc_rate = _parse_timecodes(all_timecodes)
    except _BadRow as bad:
        raise LiveLinkFormatError(
            source, f"timecode {all_timecodes[bad.row]!r} is not HH:MM:SS:FF.fff (is this a Live Link Face CSV?)",
            _line_of(text, all_timecodes[bad.row]),
        ) from None  # fmt: skip

    rate = float(fps) if fps else (_infer_fps(np.sort(seconds)) or 60.0)
    t0 = seconds.min()
    frame_index = np.round((seconds - t0) * rate).astype(np.int64)
    measured = frame_index[: len(timecodes)]
    backwards = np.flatnonzero(np.diff(measured) < 0)
    if backwards.size:
        row = int(backwards[0]) + 1
        raise LiveLinkFormatError(source, "timecodes go backwards; rows must be in time order", _line_of(text, timecodes[row]))
    num_frames = int(frame_index.max()) + 1
    values = np.zeros((num_frames, NUM_CHANNELS), dtype=np.float32)
    valid = np.zeros(num_frames, dtype=bool)
    position = {col: i for i, col in enumerate(channel_cols)}
    order = [position.get(column_of.get(c, -1), -1) for c in CHANNELS]
    present = np.array([o >= 0 for o in order])
    data = table[:, [max(o, 0) for o in order]]
    data[:, ~present] = 0.0
    bad = ~np.isfinite(data)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise LiveLinkFormatError(source, f"channel {CHANNELS[c]} is empty or not a number", _line_of(text, timecodes[r]))
    values[measured] = data
    valid[measured] = True
    num_lost = int((~valid).sum())
    if num_lost and on_tracking_loss == "raise":
        first = int(np.argmax(~valid))
        raise LiveLinkFormatError(
            source, f"tracking lost or frame dropped at frame {first} ({num_lost} frames in all); "
            "use on_tracking_loss='interpolate' or 'mask' to read it anyway",
        )  # fmt: skip
    if num_lost and on_tracking_loss == "interpolate":
        _interpolate_short_gaps(values, valid, max_gap=int(round(max_gap_s * rate)))

    metadata: dict[str, Any] = {"source": source, "timecode_rate": tc_rate}
    if ignored:
        metadata["ignored_columns"] = ignored
    if missing:
        metadata["filled_channels"] = missing
    if num_lost:
        metadata["lost_frames"] = num_lost
    start = all_timecodes[int(np.argmin(seconds))].strip()
    return FaceMotion(values, fps=rate, start_timecode=start, valid=valid, caption=caption, metadata=metadata)


class _BadRow(Exception):
    def __init__(self, row: int):
        self.row = row


def _line_of(text: str, row_start: str) -> int | None:
    """File line number of the first row starting with ``row_start`` (only computed for error messages)."""
    for number, line in enumerate(text.split("\n"), start=1):
        if number > 1 and line.startswith(row_start):
            return number
    return None


def _read_rows(
    body: str, header_width: int, channel_cols: list[int], source: str, text: str
) -> tuple[list[str], np.ndarray, list[str]]:
    """Parse the rows with Arrow's multi-threaded CSV reader.

    Returns ``(timecodes, table [rows, len(channel_cols)], lost_timecodes)``: full rows, and the timecodes of
    "tracking lost" rows (``<timecode>,0``). Rows longer than the header (unnamed trailing columns) are fine.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    width = header_width
    for _ in range(2):
        lost, odd, longest = [], [], [0]

        def on_invalid_row(row) -> str:
            if row.actual_columns <= 2:
                lost.append(row.text.split(",", 1)[0])
            elif row.actual_columns > row.expected_columns:
                longest[0] = max(longest[0], row.actual_columns)
            else:
                odd.append(row)
            return "skip"

        names = [f"c{i}" for i in range(width)]
        types = {"c0": pa.string(), **{f"c{i}": pa.float64() for i in channel_cols}}
        try:
            table = pacsv.read_csv(
                io.BytesIO(body.encode()),
                read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22, use_threads=len(body) > 1 << 22),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid_row),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, include_columns=["c0"] + [f"c{i}" for i in channel_cols],
                    strings_can_be_null=False, quoted_strings_can_be_null=False,
                ),
            )  # fmt: skip
        except pa.ArrowInvalid:  # a cell that is not a number: find it row by row for a precise message
            _locate_bad_cell(body, channel_cols, source, text)
            raise
        if longest[0] and width == header_width:
            width = longest[0]  # rows carry unnamed trailing columns: read again, wide enough
            continue
        break
    if odd:
        fields = odd[0].actual_columns
        raise LiveLinkFormatError(
            source, f"row has {fields} fields but the header has {header_width} (truncated file?)",
            _line_of(text, odd[0].text[:40]),
        )  # fmt: skip
    timecodes = table.column("c0").to_pylist()
    values = np.stack([table.column(f"c{i}").to_numpy(zero_copy_only=False) for i in channel_cols], axis=1) if channel_cols else np.zeros((len(timecodes), 0))
    return timecodes, values.astype(np.float64, copy=False), lost


def _locate_bad_cell(body: str, channel_cols: list[int], source: str, text: str) -> None:
    for line in body.split("\n"):
        fields = line.rstrip("\r").split(",")
        if len(fields) <= 2:
            continue
        for col in channel_cols:
            if col < len(fields):
                cell = fields[col].strip().strip('"')
                try:
                    float(cell) if cell else None
                except ValueError:
                    raise LiveLinkFormatError(
                        source, f"column {col + 1} holds {cell!r}, which is not a number", _line_of(text, line[:40])
                    ) from None


def _parse_timecodes(strings: list[str]) -> tuple[np.ndarray, int]:
    """Seconds of each timecode and the timecode rate (the smallest standard rate above the largest FF).

    Raises ``_BadRow`` with the index of the first malformed timecode.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = pc.extract_regex(pa.array(strings, pa.string()), _TIMECODE_PATTERN)
    if parts.null_count:
        raise _BadRow(int(np.flatnonzero(parts.is_null().to_numpy(zero_copy_only=False))[0]))
    hms = sum(
        pc.cast(parts.field(k), pa.int64()).to_numpy() * scale for k, scale in (("h", 3600), ("m", 60), ("s", 1))
    )
    ff = pc.cast(parts.field("f"), pa.int64()).to_numpy()
    frac = pc.cast(pc.binary_join_element_wise("0", parts.field("frac"), ""), pa.float64()).to_numpy()
    # The timecode rate is the smallest standard rate above the largest FF, when the take crosses a second
    # boundary; a take shorter than that cannot tell, and Live Link Face's default timecode rate (60) is assumed.
    crosses_second = len(np.unique(hms)) > 1
    rate = next((int(r) for r in STANDARD_FPS if r > ff.max() and (crosses_second or r >= 60)), None)
    if rate is None:
        raise _BadRow(int(np.argmax(ff)))
    seconds = hms + (ff + frac) / rate
    # Midnight rollover: keep time increasing.
    seconds = seconds + 86400.0 * np.concatenate([[0], np.cumsum(np.diff(seconds) < -43200)])
    return seconds.astype(np.float64), rate


_TIMECODE_PATTERN = r"^\s*(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})[:;](?P<f>\d{1,3})(?P<frac>\.\d+|)\s*$"


def _interpolate_short_gaps(values: np.ndarray, valid: np.ndarray, max_gap: int) -> None:
    """Fill runs of invalid frames no longer than ``max_gap`` by linear interpolation (in place).

    Runs at the start or end of the clip hold the nearest valid frame. ``valid`` is left unchanged.
    """
    if not valid.any():
        return
    idx = np.flatnonzero(valid)
    starts = np.flatnonzero(np.diff(np.concatenate([[1], valid.astype(np.int8)])) == -1)
    ends = np.flatnonzero(np.diff(np.concatenate([valid.astype(np.int8), [1]])) == 1) + 1
    for start, end in zip(starts, ends):
        if end - start > max_gap:
            continue
        frames = np.arange(start, end)
        before = idx[idx < start]
        after = idx[idx >= end]
        if before.size and after.size:
            a, b = before[-1], after[0]
            w = ((frames - a) / (b - a))[:, None]
            values[start:end] = (1 - w) * values[a] + w * values[b]
        else:
            values[start:end] = values[before[-1] if before.size else after[0]]
