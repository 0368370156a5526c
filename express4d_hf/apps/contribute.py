"""Contributions: check an uploaded Live Link Face take, then store it in the official release layout.

The paper announced a site where anyone could add captures to Express4D; it never shipped. The Space's
Contribute tab is that site, and this module is its logic, kept free of any UI so it can be tested and
reused (a batch import, a moderation script):

1. :func:`validate_take` reads an upload with :func:`~express4d_hf.livelink.read_livelink_csv` and runs
   every rule of :class:`ValidationRules` (file type and size, format, frame rate, duration 1-10 s,
   tracking-loss ratio, channel ranges, flat channels). It never writes anything and returns a
   :class:`ValidationReport` that says, per rule, what passed and how to fix what did not.
2. :func:`store_contribution` writes an accepted take, only with explicit consent, into a folder in
   the official release layout (``data/<take>.csv``, ``texts/<take>.txt``, ``train.txt``,
   ``test.txt``) plus ``meta/<take>.json`` (consent, licence, hashes, validation summary), so
   ``express4d data build <folder>`` reads it like any release. The CSV stored is the take re-written
   from what was read (61 channels, lost frames as ``<timecode>,0`` rows), never the upload itself;
   duplicates are found on the hash of that re-written content, and the store has quotas
   (:class:`StoreQuota`: 2 GiB and 5,000 takes by default). New takes join the train split: the
   official test split is the benchmark and never changes.
3. :func:`open_hub_pull_request` sends the same files as a pull request to a Hub dataset repository
   (``huggingface_hub.HfApi.create_commit(create_pr=True)``), for a Space configured with a repo and
   a write token; maintainers review and merge.

>>> import io, tempfile, numpy as np
>>> from express4d_hf.livelink import FaceMotion, write_livelink_csv
>>> t = np.linspace(0, 2 * np.pi, 180, dtype=np.float32)
>>> values = np.zeros((180, 61), np.float32); values[:, :52] = 0.3 + 0.2 * np.sin(t)[:, None]
>>> path = Path(tempfile.mkdtemp()) / "take.csv"
>>> write_livelink_csv(FaceMotion(values, fps=60), path)
>>> report = validate_take(path)
>>> report.ok, [c.rule for c in report.checks][:3]
(True, ['file', 'format', 'frame_rate'])
>>> validate_take(path, ValidationRules(min_duration_s=5.0)).failed[0].rule
'duration'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..core.arkit import BLENDSHAPES, CHANNELS, EYE_ROTATION, HEAD_ROTATION, indices
from ..core.io import atomic_write_bytes, atomic_write_text
from ..core.motion import FaceMotion, format_timecode
from ..livelink import LiveLinkFormatError, read_livelink_csv

__all__ = [
    "CONSENT_TEXT",
    "DuplicateContributionError",
    "StoreFullError",
    "StoreQuota",
    "canonical_csv",
    "CONTRIBUTION_LICENSE",
    "Check",
    "ContributionError",
    "StoredContribution",
    "ValidationReport",
    "ValidationRules",
    "check_caption",
    "contribution_files",
    "open_hub_pull_request",
    "random_instruction",
    "store_contribution",
    "store_full_message",
    "store_usage",
    "validate_take",
]

#: Licence every contributed take is published under (SPDX id); shown next to the consent checkbox.
CONTRIBUTION_LICENSE = "CC-BY-4.0"
CONSENT_TEXT = (
    "I recorded this take of my own face myself, and I agree that its blendshape and head/eye rotation "
    "curves (no video, no image), its caption and the optional contributor name are published as part of "
    f"the Express4D contributions under the {CONTRIBUTION_LICENSE} licence, for anyone to use and redistribute."
)
MAX_CAPTION_CHARS = 300
CONTRIBUTION_SPLIT = "train"  # the official test split is the benchmark: contributions never join it
META_DIR = "meta"

_BLENDSHAPE_IDX = np.array(indices(BLENDSHAPES))
_HEAD_IDX = np.array(indices(HEAD_ROTATION))
_EYE_IDX = np.array(indices(EYE_ROTATION))


class ContributionError(ValueError):
    """A contribution that cannot be stored (no consent, rejected take, bad caption, duplicate)."""


class DuplicateContributionError(ContributionError):
    """The same take (same re-written content) is in the store already."""


class StoreFullError(ContributionError):
    """The contributions store reached its quota (total size or number of takes)."""


@dataclasses.dataclass(frozen=True)
class StoreQuota:
    """Limits of a local contributions store: total bytes on disk and number of takes (``None``: no limit)."""

    max_bytes: int | None = 2 << 30
    max_takes: int | None = 5000


# --- validation ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ValidationRules:
    """Thresholds of :func:`validate_take`; the defaults describe an Express4D-like take.

    Attributes:
        accepted_fps: capture rates accepted (Express4D is recorded at 60 fps; a 30 fps take would be
            a different protocol).
        min_duration_s, max_duration_s: the paper's clips last 1-10 s.
        max_tracking_loss: largest fraction of frames with "tracking lost" rows or dropped frames.
        blendshape_range: allowed blendshape values (real captures overshoot [0, 1] slightly).
        head_rotation_limit_rad, eye_rotation_limit_rad: largest absolute rotation in radians; beyond
            that the file is more likely in degrees or corrupt than a real head turn.
        flat_threshold: a channel whose peak-to-peak over valid frames is below this is "flat".
        min_moving_blendshapes: at least this many blendshapes must move (a frozen face means the
            tracker saw no face, or the app exported a constant).
        max_file_bytes: largest upload (20 MB is about 10 minutes of 60 fps capture).
    """

    accepted_fps: tuple[float, ...] = (60.0,)
    min_duration_s: float = 1.0
    max_duration_s: float = 10.0
    max_tracking_loss: float = 0.10
    blendshape_range: tuple[float, float] = (-0.1, 1.2)
    head_rotation_limit_rad: float = math.pi / 2
    eye_rotation_limit_rad: float = 1.2
    flat_threshold: float = 1e-3
    min_moving_blendshapes: int = 5
    max_file_bytes: int = 20 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Check:
    """The outcome of one rule: ``rule`` (a short id), ``passed``, and a sentence saying why or how to fix."""

    rule: str
    passed: bool
    message: str


RULE_TITLES = {
    "file": "File",
    "format": "Live Link Face format",
    "frame_rate": "Frame rate",
    "duration": "Duration",
    "tracking_loss": "Tracking loss",
    "channel_range": "Channel ranges",
    "flat_channels": "Moving channels",
}


@dataclasses.dataclass
class ValidationReport:
    """What :func:`validate_take` found. ``ok`` is True when every rule passed.

    ``motion`` is the parsed take (``None`` when the file could not be read), ``warnings`` are
    remarks that do not reject the take (head rotation not recorded, a few flat channels), ``sha256``
    identifies the uploaded bytes and ``content_sha256`` the take's re-written content (frame rate, valid
    mask and values to float32 print precision; timecodes, padding columns and spacing do not count):
    duplicates are refused on it.
    """

    source: str
    checks: list[Check]
    motion: FaceMotion | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    sha256: str = ""
    num_bytes: int = 0
    content_sha256: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (stored in ``meta/<take>.json``)."""
        out: dict[str, Any] = {
            "ok": self.ok,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "warnings": list(self.warnings),
            "sha256": self.sha256,
            "num_bytes": self.num_bytes,
            "content_sha256": self.content_sha256,
        }
        if self.motion is not None:
            out.update(fps=self.motion.fps, num_frames=self.motion.num_frames,
                       duration_s=round(self.motion.duration, 3), lost_frames=int((~self.motion.valid).sum()))  # fmt: skip
        return out

    def to_markdown(self) -> str:
        """A short report for people: the verdict, one line per rule, then the remarks."""
        name = Path(self.source).name
        if self.ok:
            head = f"### Accepted: `{name}` passes every check"
        else:
            head = f"### Rejected: `{name}` fails {len(self.failed)} check(s); nothing was kept"
        lines = [head, "", "| check | result | detail |", "|---|---|---|"]
        for c in self.checks:
            detail = c.message.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {RULE_TITLES.get(c.rule, c.rule)} | {'pass' if c.passed else '**FAIL**'} | {detail} |")
        if self.warnings:
            lines += ["", "Remarks:"] + [f"- {w}" for w in self.warnings]
        return "\n".join(lines)


def validate_take(path: str | os.PathLike, rules: ValidationRules = ValidationRules()) -> ValidationReport:
    """Check an uploaded Live Link Face CSV against ``rules``; never writes or keeps anything.

    Rules run in order; when the file cannot be read at all (wrong type, too big, not a Live Link
    CSV) the later rules are not run, and the report says so.
    """
    path = Path(path)
    report = ValidationReport(source=str(path), checks=[])
    checks = report.checks
    if not path.is_file():
        checks.append(Check("file", False, f"{path.name}: no such file; upload the CSV again"))
        return report
    size = path.stat().st_size
    report.num_bytes = size
    if path.suffix.lower() != ".csv":
        checks.append(Check("file", False, f"{path.name} is not a .csv file; export the take's CSV from Live Link Face"))
        return report
    if size > rules.max_file_bytes:
        checks.append(Check("file", False, f"{size / 2**20:.1f} MB is above the {rules.max_file_bytes / 2**20:.0f} MB "
                                           "limit; upload one take of at most 10 s"))  # fmt: skip
        return report
    try:
        data = path.read_bytes()
    except OSError as err:
        checks.append(Check("file", False, f"{path.name}: cannot be read ({err.strerror}); upload the CSV again"))
        return report
    report.sha256 = hashlib.sha256(data).hexdigest()
    checks.append(Check("file", True, f"{size / 1024:.0f} KB CSV"))

    try:
        # "mask" keeps lost frames at zero and marked invalid: the ratio is measured, not hidden.
        motion = read_livelink_csv(io.BytesIO(data), on_tracking_loss="mask")
    except LiveLinkFormatError as err:  # the reader's contract: nothing else escapes for any content
        where = ", ".join(f"{k} {v}" for k, v in (("line", err.line), ("column", err.column)) if v is not None)
        reason = f"{where}: {err.reason}" if where else err.reason
        fix = f" Fix: {err.fix}." if err.fix else ""
        checks.append(Check("format", False, f"{reason}.{fix} Upload the CSV that Live Link Face writes for a take "
                                             "(recorded in 'Live Link (ARKit)' mode)."))  # fmt: skip
        return report
    motion.metadata["source"] = str(path)
    report.motion = motion
    report.content_sha256 = hashlib.sha256(canonical_csv(motion, start_at_zero=True)).hexdigest()
    filled = motion.metadata.get("filled_channels")
    checks.append(Check("format", True, f"{motion.num_frames} frames, 61 ARKit channels"
                                        + (f" ({len(filled)} filled with zeros)" if filled else "")))  # fmt: skip

    checks.append(_check_frame_rate(motion, rules))
    checks.append(_check_duration(motion, rules))
    checks.append(_check_tracking_loss(motion, rules))
    checks.append(_check_ranges(motion, rules))
    checks.append(_check_flat(motion, rules, report.warnings))
    return report


def _check_frame_rate(motion: FaceMotion, rules: ValidationRules) -> Check:
    accepted = " or ".join(f"{f:g}" for f in rules.accepted_fps)
    if any(math.isclose(motion.fps, f, rel_tol=1e-3) for f in rules.accepted_fps):
        return Check("frame_rate", True, f"{motion.fps:g} fps")
    return Check("frame_rate", False, f"recorded at {motion.fps:g} fps; Express4D takes are {accepted} fps. "
                                      "Set Live Link Face's frame rate to 60 and record again.")  # fmt: skip


def _check_duration(motion: FaceMotion, rules: ValidationRules) -> Check:
    d, lo, hi = motion.duration, rules.min_duration_s, rules.max_duration_s
    if lo <= d <= hi:
        return Check("duration", True, f"{d:.2f} s")
    fix = "perform the whole instruction" if d < lo else "trim the take or perform the instruction once"
    return Check("duration", False, f"{d:.2f} s is outside {lo:g}-{hi:g} s; {fix}")


def _check_tracking_loss(motion: FaceMotion, rules: ValidationRules) -> Check:
    lost = int((~motion.valid).sum())
    ratio = lost / max(motion.num_frames, 1)
    message = f"{lost} of {motion.num_frames} frames lost ({100 * ratio:.1f}%)"
    if ratio <= rules.max_tracking_loss:
        return Check("tracking_loss", True, message)
    return Check("tracking_loss", False, f"{message}, above {100 * rules.max_tracking_loss:g}%. Keep your face in view "
                                         "and well lit, and hold the phone steady.")  # fmt: skip


def _check_ranges(motion: FaceMotion, rules: ValidationRules) -> Check:
    values = motion.values[motion.valid]
    if values.size == 0:
        return Check("channel_range", False, "no frame with tracking data")
    problems = []
    lo, hi = rules.blendshape_range
    blend = values[:, _BLENDSHAPE_IDX]
    bad = (blend < lo) | (blend > hi)
    if bad.any():
        worst = int(np.argmax(np.abs(blend - np.clip(blend, lo, hi)).max(axis=0)))
        name = BLENDSHAPES[worst]
        problems.append(f"{int(bad.any(axis=0).sum())} blendshape(s) leave [{lo:g}, {hi:g}] (worst {name}: "
                        f"{blend[:, worst].min():.3g} to {blend[:, worst].max():.3g})")  # fmt: skip
    for idx, limit, what in ((_HEAD_IDX, rules.head_rotation_limit_rad, "head"),
                             (_EYE_IDX, rules.eye_rotation_limit_rad, "eye")):  # fmt: skip
        peak = np.abs(values[:, idx]).max(axis=0)
        if (peak > limit).any():
            name = CHANNELS[int(idx[int(np.argmax(peak))])]
            hint = " (degrees instead of radians?)" if peak.max() > 3.2 else ""
            problems.append(f"{what} rotation {name} reaches {peak.max():.3g} rad, beyond +-{limit:.3g}{hint}")
    if problems:
        return Check("channel_range", False, "; ".join(problems) + ". Re-export the take from Live Link Face unedited.")
    return Check("channel_range", True, "blendshapes and rotations within range")


def _check_flat(motion: FaceMotion, rules: ValidationRules, warnings: list[str]) -> Check:
    values = motion.values[motion.valid]
    if values.size == 0:
        return Check("flat_channels", False, "no frame with tracking data")
    span = values.max(axis=0) - values.min(axis=0)
    moving = span[_BLENDSHAPE_IDX] >= rules.flat_threshold
    flat_names = [n for n, m in zip(BLENDSHAPES, moving) if not m]
    if (span[_HEAD_IDX] < rules.flat_threshold).all():
        warnings.append("head rotation is constant (HeadYaw/Pitch/Roll not recorded?); the face channels are still used")
    if flat_names and moving.sum() >= rules.min_moving_blendshapes:
        shown = ", ".join(flat_names[:8]) + (", ..." if len(flat_names) > 8 else "")
        warnings.append(f"{len(flat_names)} blendshape(s) never move: {shown}")
    if moving.sum() < rules.min_moving_blendshapes:
        return Check("flat_channels", False, f"only {int(moving.sum())} of 52 blendshapes move (at least "
                                             f"{rules.min_moving_blendshapes} expected): the face looks frozen. "
                                             "Check that the app tracked your face while recording.")  # fmt: skip
    return Check("flat_channels", True, f"{int(moving.sum())} of 52 blendshapes move")


# --- the stored form of a take ------------------------------------------------------------------------
_START_RE = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})[:;](\d{1,3})(\.\d+)?\s*$")


def canonical_csv(motion: FaceMotion, *, start_at_zero: bool = False, digits: int = 7) -> bytes:
    """The take as stored: a Live Link Face CSV of the 61 ARKit channels at the take's own rate, one row per
    frame from the start timecode on, lost frames written as ``<timecode>,0`` rows (they read back as lost).

    Nothing of the upload survives but what was read: padding columns, spacing, number formatting and stray
    bytes are gone. ``digits`` significant digits are written (7: float32's precision). The duplicate hash is
    taken over this form with ``start_at_zero=True`` (timecodes from 00:00:00:00), so padding, spacing, a moved
    start timecode or stray columns do not make a copy a new take.
    """
    rate = max(1, int(round(motion.fps)))
    start = 0
    match = None if start_at_zero else _START_RE.match(motion.start_timecode or "")
    if match:
        h, m, s_, ff = (int(g) for g in match.groups()[:4])
        tc_rate = int(motion.metadata.get("timecode_rate") or rate)
        seconds = h * 3600 + m * 60 + s_ + (ff + float(match.group(5) or 0)) / max(tc_rate, 1)
        start = int(round(seconds * rate))
    lines = ["Timecode,BlendShapeCount," + ",".join(CHANNELS)]
    for frame, (row, valid) in enumerate(zip(motion.values, motion.valid)):
        timecode = format_timecode(frame, rate, start)
        if valid:
            lines.append(f"{timecode},{len(CHANNELS)}," + ",".join(f"{float(x):.{digits}g}" for x in row))
        else:
            lines.append(f"{timecode},0")
    return ("\n".join(lines) + "\n").encode()


# --- instructions and captions -----------------------------------------------------------------------
def random_instruction(seed: int | None = None) -> str:
    """An instruction in the paper's style from the procedural corpus' prompt bank.

    >>> random_instruction(3) == random_instruction(3)
    True
    """
    from ..data.synthetic import render_caption, sample_caption_spec

    rng = np.random.default_rng(seed)
    return render_caption(sample_caption_spec(rng), rng)


def check_caption(caption: str | None) -> str:
    """The caption, stripped; raises :class:`ContributionError` when it cannot be stored as one line of
    ``texts/<take>.txt`` (empty, too long, several lines, or holding ``#``, the field separator)."""
    text = " ".join((caption or "").split())
    if not text:
        raise ContributionError("the caption is empty; describe what you performed, e.g. 'A person is smiling softly'")
    if len(text) > MAX_CAPTION_CHARS:
        raise ContributionError(f"the caption has {len(text)} characters; the limit is {MAX_CAPTION_CHARS}")
    if "#" in text:
        raise ContributionError("the caption may not contain '#' (it separates fields in texts/*.txt)")
    return text


# --- storing ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StoredContribution:
    """Where an accepted take went: ``take`` name and either the local ``folder`` or a hub ``pr_url``."""

    take: str
    files: tuple[str, ...]
    folder: Path | None = None
    pr_url: str | None = None


def _take_name(report: ValidationReport, now: _dt.datetime) -> str:
    return f"contrib_{now.strftime('%Y%m%dT%H%M%SZ')}_{(report.content_sha256 or report.sha256)[:8]}"


def contribution_files(
    report: ValidationReport,
    caption: str,
    *,
    consent: bool,
    contributor: str | None = None,
    instruction: str | None = None,
    take: str | None = None,
    now: _dt.datetime | None = None,
) -> tuple[str, dict[str, bytes]]:
    """``(take name, {path in the release: bytes})`` of one accepted take (no split file).

    Raises :class:`ContributionError` without consent or for a rejected take: nothing is ever
    prepared for storage otherwise.
    """
    from ..data.synthetic import pos_tag

    if consent is not True:
        raise ContributionError("consent is required: tick the consent and licence box to store the take")
    if not report.ok:
        failed = ", ".join(RULE_TITLES.get(c.rule, c.rule) for c in report.failed) or "not validated"
        raise ContributionError(f"the take was rejected ({failed}); fix it and upload it again")
    caption = check_caption(caption)
    contributor = " ".join((contributor or "").split())[:64] or None
    now = now or _dt.datetime.now(_dt.timezone.utc)
    take = take or _take_name(report, now)
    source = Path(report.source)
    meta = {
        "take": take,
        "caption": caption,
        "instruction": instruction,
        "contributor": contributor,
        "license": CONTRIBUTION_LICENSE,
        "consent": {"given": True, "text": CONSENT_TEXT, "time_utc": now.isoformat(timespec="seconds")},
        "source_file_name": source.name,
        "validation": report.to_dict(),
        "split": CONTRIBUTION_SPLIT,
    }
    if report.motion is None or not report.content_sha256:
        raise ContributionError("the take was not read; upload it again")
    files = {
        # the take re-written from what was read (61 channels, lost frames as <timecode>,0), not the upload
        f"data/{take}.csv": canonical_csv(report.motion),
        f"texts/{take}.txt": f"{caption}#{pos_tag(caption)}\n".encode(),
        f"{META_DIR}/{take}.json": (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode(),
    }
    return take, files


_LOCAL_LOCK = threading.Lock()


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """One writer at a time per contributions folder: a thread lock plus ``flock`` across processes."""
    with _LOCAL_LOCK:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as handle:
            try:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            except ImportError:  # Windows: the thread lock alone
                pass
            yield


def _existing_hashes(folder: Path) -> dict[str, str]:
    """content hash -> take of every stored take (older entries without one: their upload hash)."""
    hashes = {}
    for path in (folder / META_DIR).glob("*.json"):
        try:
            validation = json.loads(path.read_text(encoding="utf-8"))["validation"]
            hashes[validation.get("content_sha256") or validation["sha256"]] = path.stem
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return hashes


def store_usage(folder: str | os.PathLike) -> tuple[int, int]:
    """``(bytes on disk, number of takes)`` of a contributions store."""
    folder = Path(folder)
    size = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return size, len(list((folder / META_DIR).glob("*.json")))


def store_full_message(folder: str | os.PathLike, quota: StoreQuota = StoreQuota()) -> str | None:
    """Why the store cannot take one more take (the :class:`StoreFullError` message), or ``None`` while it can.
    The Space asks before the contributor writes a caption."""
    try:
        _check_quota(Path(folder), {}, quota)
    except StoreFullError as err:
        return str(err)
    return None


def _check_quota(folder: Path, files: dict[str, bytes], quota: StoreQuota) -> None:
    size, takes = store_usage(folder)
    new = sum(len(data) for data in files.values())
    if quota.max_takes is not None and takes + 1 > quota.max_takes:
        raise StoreFullError(f"the contributions store is full ({takes} of {quota.max_takes} takes); thank you! "
                             "New takes can be accepted once the maintainers have moved the current ones to the dataset")  # fmt: skip
    if quota.max_bytes is not None and (size + new > quota.max_bytes or (not files and size >= quota.max_bytes)):
        raise StoreFullError(f"the contributions store is full ({size / 2**20:.1f} of {quota.max_bytes / 2**20:.0f} "
                             "MiB used); thank you! New takes can be accepted once the maintainers have moved the "
                             "current ones to the dataset")  # fmt: skip


def store_contribution(
    report: ValidationReport,
    caption: str,
    folder: str | os.PathLike,
    *,
    consent: bool,
    contributor: str | None = None,
    instruction: str | None = None,
    quota: StoreQuota = StoreQuota(),
) -> StoredContribution:
    """Write an accepted take into ``folder`` (release layout, created on first use) and list it in train.txt.

    Every file is written atomically and the split file last, so an interrupted store leaves at most
    an unlisted file, never a listed take with missing parts. The same take twice (the same re-written
    content, however the upload was padded or re-formatted) raises :class:`DuplicateContributionError`;
    a store at its ``quota`` raises :class:`StoreFullError`.
    """
    folder = Path(folder)
    take, files = contribution_files(report, caption, consent=consent, contributor=contributor, instruction=instruction)
    with _folder_lock(folder):
        duplicate = _existing_hashes(folder).get(report.content_sha256)
        if duplicate:
            raise DuplicateContributionError(f"this take was already contributed (take {duplicate}); thank you!")
        _check_quota(folder, files, quota)
        for rel, data in files.items():
            atomic_write_bytes(folder / rel, data)
        for split in ("train", "test"):
            (folder / f"{split}.txt").touch()
        if contributor := json.loads(files[f"{META_DIR}/{take}.json"])["contributor"]:
            performers_path = folder / "performers.json"
            performers = json.loads(performers_path.read_text()) if performers_path.is_file() else {}
            performers[take] = contributor
            atomic_write_text(performers_path, json.dumps(performers, indent=2, ensure_ascii=False) + "\n")
        split_path = folder / f"{CONTRIBUTION_SPLIT}.txt"
        names = split_path.read_text().splitlines()
        atomic_write_text(split_path, "".join(f"{n}\n" for n in names + [take] if n.strip()))
    return StoredContribution(take=take, files=tuple(sorted(files)), folder=folder)



def open_hub_pull_request(
    report: ValidationReport,
    caption: str,
    *,
    repo_id: str,
    token: str,
    consent: bool,
    contributor: str | None = None,
    instruction: str | None = None,
    repo_type: str = "dataset",
) -> StoredContribution:
    """Open a pull request adding the take to a Hub dataset repository in the release layout.

    The PR adds ``data/``, ``texts/`` and ``meta/`` files and the repository's ``train.txt`` with the
    take appended (read from the main branch now; maintainers merge PRs one at a time). Needs a token
    with write access; the Space reads it from a secret, never from the page.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise ContributionError(f"{repo_id!r} is not a Hub repository id (owner/name)")
    take, files = contribution_files(report, caption, consent=consent, contributor=contributor, instruction=instruction)
    api = HfApi(token=token)
    try:
        current = Path(hf_hub_download(repo_id, f"{CONTRIBUTION_SPLIT}.txt", repo_type=repo_type, token=token)).read_text()
    except EntryNotFoundError:
        current = ""
    names = [n for n in current.splitlines() if n.strip()] + [take]
    files[f"{CONTRIBUTION_SPLIT}.txt"] = "".join(f"{n}\n" for n in names).encode()
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=data) for rel, data in files.items()]
    info = api.create_commit(
        repo_id, operations, repo_type=repo_type, create_pr=True,
        commit_message=f"Contribution {take}: {check_caption(caption)[:60]}",
        commit_description=f"Submitted through the Express4D Space under {CONTRIBUTION_LICENSE} with the "
                           f"contributor's consent.\n\nValidation:\n\n{report.to_markdown()}",
    )  # fmt: skip
    return StoredContribution(take=take, files=tuple(sorted(files)), pr_url=getattr(info, "pr_url", None))
