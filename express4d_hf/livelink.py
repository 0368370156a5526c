"""The Live Link Face CSV format: :func:`read_livelink_csv` and :func:`write_livelink_csv`.

A Live Link Face CSV has one row per frame: ``Timecode``, ``BlendShapeCount`` (newer app versions
spell it ``BlendshapeCount``), then 61 float channels. The reader maps columns by name
(case-insensitively, PascalCase, camelCase or Apple raw names), infers the capture rate from the
timecodes, re-inserts dropped frames and "tracking lost" rows (``<timecode>,0``) as invalid frames,
and raises :class:`LiveLinkFormatError` naming the file, line and fix for anything else.

>>> import numpy as np, io
>>> m = FaceMotion(np.zeros((120, 61), np.float32), fps=60, caption="A person is smiling")
>>> buf = io.StringIO(); write_livelink_csv(m, buf); _ = buf.seek(0)
>>> back = read_livelink_csv(buf)
>>> back.num_frames, back.fps, round(back.duration, 2)
(120, 60.0, 2.0)
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from .core.arkit import CHANNELS, NUM_CHANNELS, try_canonical_channel_name
from .core.io import NotUTF8Error, atomic_write_text, decode_utf8
from .core.motion import FaceMotion, format_timecode, timecode_to_frames

__all__ = [
    "MAX_FRAMES_PER_ROW", "MAX_TAKE_SECONDS", "FaceMotion", "LiveLinkFileNotFoundError", "LiveLinkFormatError",
    "LiveLinkOSError", "find_take_csv", "read_livelink_csv", "write_livelink_csv",
]  # fmt: skip

STANDARD_FPS = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0)
TrackingLossPolicy = Literal["interpolate", "mask", "raise"]


class LiveLinkFormatError(ValueError):
    """A Live Link Face file that cannot be read; the message names the file, line, column and the fix.

    Attributes:
        source: the file (path, stream name or ``<stream>``).
        reason: what is wrong.
        line: 1-based line of the file (``None`` when the problem is the whole file).
        column: 1-based CSV column (field) of the line, when one cell is at fault.
        fix: what to do about it.
    """

    def __init__(self, source: str, reason: str, line: int | None = None, column: int | None = None,
                 fix: str | None = None):  # fmt: skip
        self.source, self.reason, self.line, self.column, self.fix = str(source), reason, line, column, fix
        where = str(source)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        message = f"{where}: {reason}"
        if fix:
            message += f"{'' if reason.endswith('.') else '.'} Fix: {fix}"
        super().__init__(message)

    def __reduce__(self):  # picklable (process pools send errors back to the parent)
        return type(self), (self.source, self.reason, self.line, self.column, self.fix)


class LiveLinkFileNotFoundError(LiveLinkFormatError, FileNotFoundError):
    """The path does not exist (also a :class:`FileNotFoundError`)."""


class LiveLinkOSError(LiveLinkFormatError, OSError):
    """The path exists but cannot be read (permissions, a device, an I/O error); also an :class:`OSError`."""


def _infer_fps(seconds: np.ndarray) -> float | None:
    steps = np.diff(seconds)
    steps = steps[steps > 1e-6]
    if steps.size == 0:
        return None
    # The smallest common step is one frame period; dropped frames make some steps multiples of it.
    period = float(np.percentile(steps, 25))
    return min(STANDARD_FPS, key=lambda r: abs(1.0 / r - period))


# --- writing ---------------------------------------------------------------------------------------
def write_livelink_csv(motion: FaceMotion, path: str | os.PathLike | IO[str], fps: float | None = 60.0) -> None:
    """Write a Live Link Face CSV that Live Link importers (Unreal, Blender, Maya) accept.

    The motion is resampled to ``fps`` (60 by default, ``None`` keeps its rate) and given its own
    continuous timecodes starting at its ``start_timecode``. Files are written atomically.
    """
    out = motion if fps is None else motion.resample(fps)
    rate = int(round(out.fps))
    start = timecode_to_frames(motion.start_timecode, rate)
    timecodes = [format_timecode(i, rate, start) for i in range(out.num_frames)]
    body = io.StringIO()
    # 7 significant digits is float32's precision: the round trip is exact to print precision.
    np.savetxt(body, out.values, fmt="%.7g", delimiter=",")
    rows = body.getvalue().splitlines()
    header = "Timecode,BlendShapeCount," + ",".join(CHANNELS)
    text = header + "\n" + "".join(f"{tc},{NUM_CHANNELS},{row}\n" for tc, row in zip(timecodes, rows))
    if hasattr(path, "write"):
        path.write(text)  # type: ignore[union-attr]
        return
    atomic_write_text(Path(path), text)


# --- reading ---------------------------------------------------------------------------------------
_NP_FLOAT_REPR = re.compile(r"(?:np|numpy)\.float(?:16|32|64)?\(([^()\n]*)\)")
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


#: Longest take the reader accepts, in seconds (Express4D clips last 1-10 s; a Live Link session rarely
#: records more than a few minutes in one take).
MAX_TAKE_SECONDS = 30 * 60
#: A timecode span may imply at most this many frames per row of the file (plus one second): more means a
#: bad timecode, not dropped frames (Live Link Face drops a few frames, never 90% of a take).
MAX_FRAMES_PER_ROW = 10
#: Largest file the reader accepts (a 30-minute 60 fps take is about 75 MB).
MAX_FILE_BYTES = 512 << 20
FLOAT32_MAX = float(np.finfo(np.float32).max)

_NUMBER_RE = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
_REEXPORT = "re-export the take's CSV from Live Link Face (or correct the file by hand)"


def read_livelink_csv(
    source: str | os.PathLike | IO[str] | IO[bytes],
    *,
    on_tracking_loss: TrackingLossPolicy = "interpolate",
    max_gap_s: float = 0.5,
    fill_missing: bool = False,
    fps: float | None = None,
    caption: str | None = None,
    max_abs_value: float | None = None,
) -> FaceMotion:
    """Read a Live Link Face CSV (path, take folder, or open text or binary file) into a :class:`FaceMotion`.

    The contract: the result has finite float32 values of shape ``[T, 61]``, ``fps > 0`` and a plausible
    length (at most :data:`MAX_FRAMES_PER_ROW` frames per row of the file plus one second, and at most
    :data:`MAX_TAKE_SECONDS`); any other input raises :class:`LiveLinkFormatError` naming the file, line,
    column and fix. Nothing else escapes for any content of a path, binary stream or text stream (a missing
    path raises :class:`LiveLinkFileNotFoundError`, an unreadable one :class:`LiveLinkOSError`, both
    subclasses of it and of the matching ``OSError``). Values a little past [0, 1] are kept as captured.

    Args:
        source: a ``.csv`` path, a take folder holding one, or a file object (text or binary, UTF-8).
        on_tracking_loss: frames with no data ("tracking lost" rows ``<timecode>,0`` and dropped
            frames) are always marked ``valid=False``. ``"interpolate"`` fills gaps of at most
            ``max_gap_s`` seconds linearly (longer gaps stay 0); ``"mask"`` leaves them all 0;
            ``"raise"`` raises :class:`LiveLinkFormatError` at the first lost frame.
        max_gap_s: longest gap, in seconds, that ``"interpolate"`` fills.
        fill_missing: fill channels the file lacks with zeros (recorded in ``metadata``) instead of
            raising.
        fps: the capture rate, when the timecodes cannot tell (single-row files); inferred otherwise.
        caption: stored on the returned motion.
        max_abs_value: when given, a cell whose magnitude is larger is an error naming its line and column
            (the dataset build uses it: blendshapes live near [0, 1] and rotations are radians).
    """
    if on_tracking_loss not in ("interpolate", "mask", "raise"):
        raise ValueError(f"on_tracking_loss must be 'interpolate', 'mask' or 'raise', got {on_tracking_loss!r}")
    if fps is not None and not (_as_float(fps) > 0 and math.isfinite(_as_float(fps))):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if not (_as_float(max_gap_s) >= 0 and math.isfinite(_as_float(max_gap_s))):
        raise ValueError(f"max_gap_s must be a finite number >= 0, got {max_gap_s!r}")
    name, text = _read_source_text(source)
    return _parse_livelink_text(
        text, name, on_tracking_loss=on_tracking_loss, max_gap_s=float(max_gap_s), fill_missing=fill_missing,
        fps=None if fps is None else float(fps), caption=caption, max_abs_value=max_abs_value,
    )  # fmt: skip


def _as_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _read_source_text(source: Any) -> tuple[str, str]:
    """``(name, text)`` of a path, take folder, text stream or binary stream; typed errors only."""
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) and name else "<stream>"
        try:
            data = source.read(MAX_FILE_BYTES + 1)
        except UnicodeDecodeError as err:
            raise LiveLinkFormatError(
                name, f"the stream is not UTF-8 text ({err.reason}, byte 0x{err.object[err.start]:02x})",
                fix="save the CSV as UTF-8 (as Live Link Face writes it), or pass the path or a binary stream so the "
                "exact line can be named",
            ) from None  # fmt: skip
        except (OSError, ValueError, TypeError) as err:
            raise LiveLinkFormatError(name, f"the stream cannot be read ({type(err).__name__}: {err})",
                                      fix="pass an open, readable file or the file's path") from None  # fmt: skip
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, str):
            raise LiveLinkFormatError(name, f"the stream returned {type(data).__name__}, not text or bytes",
                                      fix="pass a file opened for reading, a path, or an io.StringIO/BytesIO")  # fmt: skip
        if len(data) > MAX_FILE_BYTES:
            raise LiveLinkFormatError(name, f"the stream holds more than {MAX_FILE_BYTES >> 20} MiB, more than a "
                                      f"{MAX_TAKE_SECONDS // 60}-minute take", fix="split the recording into takes")  # fmt: skip
        if isinstance(data, bytes):
            return name, _decode_bytes(data, name)
        return name, data[1:] if data.startswith("\ufeff") else data
    try:
        path = Path(source)
    except TypeError:
        raise TypeError(f"read_livelink_csv needs a path or a file object, got {type(source).__name__}") from None
    name = str(path)
    try:
        if path.is_dir():
            path = find_take_csv(path)
            name = str(path)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LiveLinkFormatError(name, f"the file is {size / 2**20:.0f} MiB, more than a "
                                      f"{MAX_TAKE_SECONDS // 60}-minute take", fix="split the recording into takes")  # fmt: skip
        data = path.read_bytes()
    except FileNotFoundError:
        raise LiveLinkFileNotFoundError(name, "no such file", fix="check the path") from None
    except LiveLinkFormatError:
        raise
    except OSError as err:
        raise LiveLinkOSError(name, f"cannot be read ({err.strerror or type(err).__name__})",
                              fix="check that it is a readable file") from None  # fmt: skip
    except ValueError as err:  # e.g. a NUL byte inside the path
        raise LiveLinkFileNotFoundError(name, f"not a usable path ({err})", fix="check the path") from None
    return name, _decode_bytes(data[: MAX_FILE_BYTES + 1], name)


def _decode_bytes(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LiveLinkFormatError(name, "the file is UTF-16 text", 1, 1,
                                  "save it as UTF-8 (as Live Link Face writes it)")  # fmt: skip
    try:
        return decode_utf8(data)
    except NotUTF8Error as err:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # offsets count from after a byte-order mark
        column = data.count(b",", bom + err.line_start, bom + err.offset) + 1
        raise LiveLinkFormatError(
            name, f"byte 0x{err.byte:02x} (byte {err.offset - err.line_start + 1} of the line) is not UTF-8 text"
            " (a binary file, or text saved in another encoding)", err.line, column,
            "upload the take's CSV (not the video or a spreadsheet file) and save it as UTF-8",
        ) from None  # fmt: skip


def _locate_char(text: str, index: int) -> tuple[int, int]:
    """``(line, CSV column)`` of character ``index`` of newline-normalised ``text``."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, text.count(",", line_start, index) + 1


def _parse_livelink_text(
    text: str,
    source: str,
    *,
    on_tracking_loss: TrackingLossPolicy,
    max_gap_s: float,
    fill_missing: bool,
    fps: float | None,
    caption: str | None,
    max_abs_value: float | None = None,
) -> FaceMotion:
    if "\r" in text:  # CRLF, classic-Mac CR, or a mix of both: every one is a line break
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    nul = text.find("\x00")
    if nul >= 0:
        raise LiveLinkFormatError(source, "holds a NUL character (a binary or corrupted file)", *_locate_char(text, nul),
                                  fix=_REEXPORT)  # fmt: skip
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates in a str from a text stream
        raise LiveLinkFormatError(source, "holds a character that is not valid Unicode (a lone surrogate)",
                                  *_locate_char(text, err.start), fix=_REEXPORT) from None  # fmt: skip
    del encoded
    lines = text.split("\n")
    header_line = lines[0]
    if not header_line.strip():
        if not text.strip():
            raise LiveLinkFormatError(source, "empty file (expected a header starting with 'Timecode')", 1,
                                      fix="export the take's CSV again; the file holds nothing")  # fmt: skip
        raise LiveLinkFormatError(source, "the first line is blank; the header ('Timecode,BlendShapeCount,...') must "
                                  "come first", 1, fix="delete the blank lines above the header")  # fmt: skip
    header = [h.strip().strip('"').strip() for h in header_line.split(",")]
    width = len(header)
    if header[0].lower() != "timecode":
        raise LiveLinkFormatError(source, f"first column is {header[0][:40]!r}, expected 'Timecode'", 1, 1,
                                  "use the CSV Live Link Face writes (its header starts with 'Timecode,BlendShapeCount')")  # fmt: skip

    column_of: dict[str, int] = {}  # canonical channel -> 0-based column in the file
    ignored: list[str] = []
    for col, head in enumerate(header[1:], start=1):
        if head.lower() in ("blendshapecount", "blendshapescount"):
            continue
        canonical = try_canonical_channel_name(head)
        if canonical is None:
            if len(ignored) < 64:
                ignored.append(head[:64])
        elif canonical in column_of:
            raise LiveLinkFormatError(
                source, f"channel {canonical} appears twice in the header (columns {column_of[canonical] + 1} and "
                f"{col + 1})", 1, col + 1, "keep one column per channel",
            )  # fmt: skip
        else:
            column_of[canonical] = col
    missing = [c for c in CHANNELS if c not in column_of]
    if missing and not fill_missing:
        raise LiveLinkFormatError(
            source,
            f"{len(missing)} of the 61 ARKit channels are missing from the header ({', '.join(missing[:6])}"
            f"{', ...' if len(missing) > 6 else ''})", 1,
            fix="pass fill_missing=True to fill them with zeros, or export all channels from Live Link Face",
        )  # fmt: skip
    channel_cols = sorted(column_of.values())

    # Classify the rows: full rows, "tracking lost" rows (<timecode>,0), blank lines (skipped).
    full_lines: list[str] = []
    full_numbers: list[int] = []
    lost_timecodes: list[str] = []
    lost_numbers: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        commas = line.count(",")
        if commas == 0 and not line.strip():
            continue
        if commas == width - 1:
            full_lines.append(line)
            full_numbers.append(number)
        elif commas <= 1 and width > 2:
            first, _, rest = line.partition(",")
            if rest.strip() not in ("", "0"):
                raise LiveLinkFormatError(
                    source, f"row has {commas + 1} fields but the header has {width} (a cut-short row?)", number,
                    fix="delete the line, or re-export the take",
                )  # fmt: skip
            lost_timecodes.append(first)
            lost_numbers.append(number)
        elif commas > width - 1:  # unnamed trailing cells: ignored
            full_lines.append(",".join(line.split(",", width)[:width]))
            full_numbers.append(number)
        else:
            raise LiveLinkFormatError(
                source, f"row has {commas + 1} fields but the header has {width} (a cut-short row or a "
                "missing separator?)", number, fix="delete the line, or re-export the take",
            )  # fmt: skip
    if not full_lines and not lost_timecodes:
        raise LiveLinkFormatError(source, "the file has a header but no frames", fix="export the take again")
    if not full_lines:
        raise LiveLinkFormatError(source, f"all {len(lost_timecodes)} rows are 'tracking lost' rows: no frame holds "
                                  "data", fix="record again with the face in view")  # fmt: skip

    timecode_col, table = _parse_cells(full_lines, full_numbers, width, channel_cols, header, source)
    _check_cells(table, full_lines, full_numbers, channel_cols, header, source, max_abs_value)

    # Rows in file order (full and lost rows interleave).
    numbers = np.asarray(full_numbers + lost_numbers, dtype=np.int64)
    order = np.argsort(numbers, kind="stable")
    numbers = numbers[order]
    timecodes = timecode_col + lost_timecodes
    seconds, tc_rate = _parse_timecodes([timecodes[i] for i in order], numbers, source)
    steps = np.diff(seconds)
    if steps.size and (steps <= 0).any():
        k = int(np.flatnonzero(steps <= 0)[0])
        a, b = timecodes[order[k]].strip()[:40], timecodes[order[k + 1]].strip()[:40]
        if steps[k] == 0:
            raise LiveLinkFormatError(source, f"timecode {b!r} repeats the one on line {numbers[k]}", int(numbers[k + 1]),
                                      1, "delete the repeated row (rows are one frame each)")  # fmt: skip
        raise LiveLinkFormatError(source, f"timecode {b!r} goes backwards from {a!r} on line {numbers[k]}",
                                  int(numbers[k + 1]), 1, "put the rows in time order, or re-export the take")  # fmt: skip

    rate = float(fps) if fps else (_infer_fps(seconds) or 60.0)
    frame_index = np.round((seconds - seconds[0]) * rate).astype(np.int64)
    jumps = np.diff(frame_index)
    if jumps.size and (jumps == 0).any():
        k = int(np.flatnonzero(jumps == 0)[0])
        raise LiveLinkFormatError(
            source, f"timecode {timecodes[order[k + 1]].strip()[:40]!r} falls on the same frame at {rate:g} fps as "
            f"line {numbers[k]}", int(numbers[k + 1]), 1, "delete one of the two rows, or pass the capture rate as fps=",
        )  # fmt: skip
    num_rows = len(numbers)
    num_frames = int(frame_index[-1]) + 1
    if num_frames > MAX_FRAMES_PER_ROW * num_rows + rate:
        k = int(np.argmax(jumps))
        raise LiveLinkFormatError(
            source, f"timecode {timecodes[order[k + 1]].strip()[:40]!r} is {steps[k]:.6g} s after line {numbers[k]}'s: "
            f"{num_rows} rows would span {num_frames} frames ({num_frames / rate:.6g} s at {rate:g} fps)",
            int(numbers[k + 1]), 1, "correct the timecode, or split the take where the recording paused",
        )  # fmt: skip
    if num_frames > MAX_TAKE_SECONDS * rate:
        raise LiveLinkFormatError(
            source, f"the take lasts {num_frames / rate / 60:.1f} min, longer than the {MAX_TAKE_SECONDS // 60} min a "
            "take may last", int(numbers[-1]), 1, "split the recording into takes",
        )  # fmt: skip

    values = np.zeros((num_frames, NUM_CHANNELS), dtype=np.float32)
    valid = np.zeros(num_frames, dtype=bool)
    measured = frame_index[np.argsort(order, kind="stable")[: len(full_lines)]]
    position = {col: i for i, col in enumerate(channel_cols)}
    for c, name in enumerate(CHANNELS):
        if name in column_of:
            values[measured, c] = table[:, position[column_of[name]]]
    valid[measured] = True
    num_lost = int(num_frames - valid.sum())
    if num_lost and on_tracking_loss == "raise":
        first = int(np.argmax(~valid))
        raise LiveLinkFormatError(
            source, f"tracking lost or frame dropped at frame {first} ({num_lost} frames in all)",
            fix="use on_tracking_loss='interpolate' or 'mask' to read it anyway",
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
    start = timecodes[order[0]].strip()
    return FaceMotion(values, fps=rate, start_timecode=start, valid=valid, caption=caption, metadata=metadata)


def _parse_cells(
    rows: list[str], numbers: list[int], width: int, channel_cols: list[int], header: list[str], source: str
) -> tuple[list[str], np.ndarray]:
    """``(timecode cells, float64 [rows, len(channel_cols)])`` of full rows of exactly ``width`` fields.

    Arrow's CSV reader does the work; when it refuses a cell, the cell is found row by row for a message that
    names its line and column.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    body = "\n".join(rows)
    if "float" in body:  # Python-repr floats such as np.float32(0.25)
        body = _NP_FLOAT_REPR.sub(r"\1", body)
    if '"' in body:  # quoted cells: unquote simple ones; a stray quote is then not a number (and named)
        body = re.sub(r'"([^",\n]*)"', r"\1", body)
    names = [f"c{i}" for i in range(width)]
    types = {"c0": pa.string(), **{f"c{i}": pa.float64() for i in channel_cols}}
    try:
        table = pacsv.read_csv(
            io.BytesIO(body.encode()),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22, use_threads=len(body) > 1 << 22),
            parse_options=pacsv.ParseOptions(quote_char=False, escape_char=False, newlines_in_values=False,
                                              ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=["c0"] + [f"c{i}" for i in channel_cols],
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False,
            ),
        )  # fmt: skip
        if table.num_rows != len(rows):
            raise pa.ArrowInvalid(f"{table.num_rows} rows parsed from {len(rows)} lines")
    except (pa.ArrowException, ValueError, OverflowError) as err:
        return _parse_cells_python(body.split("\n"), numbers, channel_cols, header, source, err)
    timecodes = table.column("c0").to_pylist()
    if not channel_cols:
        return timecodes, np.zeros((len(rows), 0))
    values = np.empty((table.num_rows, len(channel_cols)))
    for j, i in enumerate(channel_cols):  # chunk by chunk: ChunkedArray.to_numpy would import pandas
        chunks = table.column(f"c{i}").chunks
        values[:, j] = np.concatenate([c.to_numpy(zero_copy_only=False) for c in chunks]) if chunks else []
    return timecodes, values


def _parse_cells_python(
    rows: list[str], numbers: list[int], channel_cols: list[int], header: list[str], source: str, err: Exception
) -> tuple[list[str], np.ndarray]:
    """The slow path: every cell checked against a plain decimal number; the first bad one is named."""
    values = np.zeros((len(rows), len(channel_cols)))
    timecodes = []
    for r, (row, number) in enumerate(zip(rows, numbers)):
        fields = row.split(",")
        timecodes.append(fields[0])
        for j, col in enumerate(channel_cols):
            cell = fields[col]
            if _NUMBER_RE.fullmatch(cell) is None:
                what = "is empty" if not cell.strip() else f"holds {cell.strip()[:40]!r}, which is not a number"
                raise LiveLinkFormatError(source, f"channel {header[col][:40]} {what}", number, col + 1,
                                          "write a plain decimal number such as 0.1234567, or re-export the take")  # fmt: skip
            try:
                values[r, j] = float(cell)
            except (ValueError, OverflowError):  # pragma: no cover - the pattern admits only valid floats
                raise LiveLinkFormatError(source, f"channel {header[col][:40]} holds {cell.strip()[:40]!r}",
                                          number, col + 1, _REEXPORT) from None  # fmt: skip
    return timecodes, values


def _check_cells(
    table: np.ndarray, rows: list[str], numbers: list[int], channel_cols: list[int], header: list[str], source: str,
    max_abs_value: float | None,
) -> None:  # fmt: skip
    """Every value finite and within float32's range (and within ``max_abs_value`` when given)."""
    limit = FLOAT32_MAX if max_abs_value is None else min(float(max_abs_value), FLOAT32_MAX)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(table) <= limit)  # NaN compares False: caught too
    if not bad.any():
        return
    r, j = (int(x) for x in np.argwhere(bad)[0])
    col = channel_cols[j]
    fields = rows[r].split(",")
    cell = fields[col].strip()[:40] if col < len(fields) else repr(table[r, j])
    value = table[r, j]
    if not np.isfinite(value):
        reason, fix = f"channel {header[col][:40]} holds {cell!r}, which is not a finite number", _REEXPORT
    elif abs(value) > FLOAT32_MAX:
        reason, fix = f"channel {header[col][:40]} holds {cell!r}, beyond float32's range (+-3.4e38)", _REEXPORT
    else:
        reason = f"channel {header[col][:40]} holds {cell!r}, beyond the plausible magnitude {limit:g}"
        fix = "blendshapes lie near [0, 1] and rotations are in radians: " + _REEXPORT
    raise LiveLinkFormatError(source, reason, numbers[r], col + 1, fix)


def _parse_timecodes(strings: list[str], numbers: np.ndarray, source: str) -> tuple[np.ndarray, int]:
    """Seconds of each timecode (file order, midnight rollovers unwrapped) and the timecode rate (the smallest
    standard rate above the largest FF). A malformed timecode is an error naming its line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def bad(i: int, why: str) -> LiveLinkFormatError:
        return LiveLinkFormatError(source, f"timecode {strings[i].strip()[:40]!r} {why}", int(numbers[i]), 1,
                                   "timecodes look like 12:34:56:07.123 (HH:MM:SS:FF.fff); re-export the take")  # fmt: skip

    parts = pc.extract_regex(pa.array(strings, pa.string()), _TIMECODE_PATTERN)
    if parts.null_count:
        raise bad(int(np.flatnonzero(parts.is_null().to_numpy(zero_copy_only=False))[0]),
                  "is not HH:MM:SS:FF.fff (is this a Live Link Face CSV?)")  # fmt: skip
    h, m, s, ff = (pc.cast(parts.field(k), pa.int64()).to_numpy() for k in ("h", "m", "s", "f"))
    for field, limit, what in ((m, 60, "minutes"), (s, 60, "seconds")):
        if (field >= limit).any():
            raise bad(int(np.argmax(field >= limit)), f"has {what} beyond 59")
    hms = h * 3600 + m * 60 + s
    frac = pc.cast(pc.binary_join_element_wise("0", parts.field("frac"), ""), pa.float64()).to_numpy()
    # The timecode rate is the smallest standard rate above the largest FF, when the take crosses a second
    # boundary; a take shorter than that cannot tell, and Live Link Face's default timecode rate (60) is assumed.
    crosses_second = len(np.unique(hms)) > 1
    rate = next((int(r) for r in STANDARD_FPS if r > ff.max() and (crosses_second or r >= 60)), None)
    if rate is None:
        raise bad(int(np.argmax(ff)), f"has frame number {int(ff.max())}, beyond any standard timecode rate")
    seconds = hms + (ff + frac) / rate
    # Midnight rollover: keep time increasing.
    seconds = seconds + 86400.0 * np.concatenate([[0], np.cumsum(np.diff(seconds) < -43200)])
    return seconds.astype(np.float64), rate


_TIMECODE_PATTERN = r"^\s*(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})[:;](?P<f>\d{1,3})(?P<frac>\.\d{1,9}|)\s*$"


def _interpolate_short_gaps(values: np.ndarray, valid: np.ndarray, max_gap: int) -> None:
    """Fill runs of invalid frames no longer than ``max_gap`` by linear interpolation (in place), in linear time.

    Runs at the start or end of the clip hold the nearest valid frame. ``valid`` is left unchanged.
    """
    if valid.all() or not valid.any() or max_gap <= 0:
        return
    v = valid.astype(np.int8)
    starts = np.flatnonzero(np.diff(np.concatenate([[1], v])) == -1)
    ends = np.flatnonzero(np.diff(np.concatenate([v, [1]])) == 1) + 1
    short = (ends - starts) <= max_gap
    if not short.any():
        return
    delta = np.zeros(len(valid) + 1, dtype=np.int64)
    delta[starts[short]] += 1  # run starts (and ends) are distinct: plain fancy indexing adds correctly
    delta[ends[short]] -= 1
    targets = np.flatnonzero(np.cumsum(delta[:-1]) > 0)
    idx = np.flatnonzero(valid)
    pos = np.searchsorted(idx, targets)  # the next valid frame is idx[pos]
    prev = idx[np.maximum(pos - 1, 0)]
    nxt = idx[np.minimum(pos, len(idx) - 1)]
    a = np.where(pos > 0, prev, nxt)
    b = np.where(pos < len(idx), nxt, prev)
    w = np.where(b != a, (targets - a) / np.maximum(b - a, 1), 0.0)[:, None]
    values[targets] = (1 - w) * values[a] + w * values[b]
