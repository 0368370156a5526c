"""Reader for the official Express4D release folder (what a user granted access downloads).

Layout (DESIGN.md, "The official release layout")::

    Express4D/
      data/<take>.csv | data/<take>.npy   one Live Link Face CSV (60 fps) or a [T, 61] array per take
      texts/<take>.txt                    one or more lines "caption#word/POS word/POS ..."
      train.txt, test.txt                 one take name per line (the official split: always use these)
      texts_plain.txt                     optional: raw prompts, one a line
      performers.json                     optional: {"<take>": <performer id>, ...}

The official loader wrapped every take in a bare ``except: pass``, so a missing CSV or caption
silently shrank the benchmark (DESIGN.md defect 8). Here every inconsistency is collected and
reported at once, by take name, in one :class:`ReleaseFormatError` that says how to fix it.

>>> import tempfile, numpy as np
>>> root = Path(tempfile.mkdtemp())
>>> for sub in ("data", "texts"): (root / sub).mkdir()
>>> np.save(root / "data" / "take_1.npy", np.zeros((90, 61), np.float32))
>>> _ = (root / "texts" / "take_1.txt").write_text("A person is smiling#a/DET person/NOUN\\n")
>>> _ = (root / "train.txt").write_text("take_1\\n"); _ = (root / "test.txt").write_text("")
>>> release = read_release(root)
>>> [(t.name, t.split, t.captions) for t in release.takes]
[('take_1', 'train', ('A person is smiling',))]
>>> release.load_motion("take_1").num_frames
90
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..core.arkit import CHANNELS, NUM_CHANNELS
from ..core.constants import CAPTURE_FPS
from ..core.io import NotUTF8Error, atomic_folder, decode_utf8
from ..core.motion import FaceMotion
from ..livelink import read_livelink_csv, write_livelink_csv

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
MOTION_SUFFIXES = (".csv", ".npy")
#: Largest magnitude a motion value may have in a release: blendshapes live near [0, 1] and rotations are in
#: radians, so anything beyond is a corrupt cell (one 1e30 would swamp the normalisation stats).
MAX_ABS_MOTION_VALUE = 1000.0


class ReleaseFormatError(ValueError):
    """The release folder is inconsistent; ``problems`` lists every one as ``(kind, name, detail)``.

    The message groups the problems by kind, names every take concerned and says how to fix each kind.
    """

    def __init__(self, root: Path, problems: list[tuple[str, str, str]]):
        self.root, self.problems = Path(root), list(problems)
        grouped: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for kind, name, detail in self.problems:
            grouped[kind].append((name, detail))
        lines = [f"{root}: {len(self.problems)} problem(s) in the Express4D release layout:"]
        for kind, items in grouped.items():
            what, fix = _PROBLEM_TEXT.get(kind, (kind, ""))
            names = ", ".join(f"{n} ({d})" if d else n for n, d in items)
            lines.append(f"  - {len(items)} {what}: {names}" + (f". Fix: {fix}" if fix else ""))
        super().__init__("\n".join(lines))


# kind -> (what is wrong, how to fix it)
_PROBLEM_TEXT = {
    "missing_file": ("required file(s) or folder(s) missing", "this does not look like an Express4D release root; "
                     "point at the folder that holds data/, texts/, train.txt and test.txt"),
    "no_data": ("take(s) listed in a split file without a motion file",
                "add data/<take>.csv (or .npy), or remove the name from train.txt/test.txt"),
    "no_text": ("take(s) listed in a split file without a caption file",
                "add texts/<take>.txt, or remove the name from train.txt/test.txt"),
    "unsplit_data": ("motion file(s) not listed in train.txt or test.txt",
                     "add each name to exactly one of train.txt/test.txt, or move the file out of data/"),
    "both_splits": ("take(s) listed in both train.txt and test.txt",
                    "keep each take in exactly one split (the official files never overlap)"),
    "duplicate": ("take(s) listed twice in the same split file", "remove the repeated line"),
    "empty_caption": ("caption file(s) without any caption", "write at least one line 'caption#word/POS ...'"),
    "ambiguous_data": ("take(s) with both a .csv and a .npy motion file", "keep only one of them"),
    "bad_performers": ("problem(s) in performers.json", "make it a JSON object {\"<take>\": <performer id>}"),
    "bad_text": ("text file(s) that are not UTF-8", "save each named file as UTF-8 (the line and byte are named)"),
    "bad_motion": ("motion file(s) that cannot be read",
                   "re-export the take from Live Link Face (or re-save the .npy), or remove it from the split files"),
}


@dataclass(frozen=True)
class Take:
    """One clip of the release: where its motion lives and what it performs.

    Attributes:
        name: the take name (file stem), e.g. ``MySlate_12_iPhone_cal``; the dataset ``id``.
        split: ``"train"`` or ``"test"`` (from the official split files).
        path: the motion file (``.csv`` Live Link Face export or ``.npy`` ``[T, 61]`` array).
        captions: every caption line of ``texts/<name>.txt`` (at least one).
        tokens: the ``word/POS`` token string of each caption line (``""`` when the line has none).
        performer: the performer id from ``performers.json``, ``None`` when unknown.
    """

    name: str
    split: str
    path: Path
    captions: tuple[str, ...]
    tokens: tuple[str, ...] = ()
    performer: int | None = None


@dataclass
class Release:
    """A validated release folder; ``takes`` holds train takes then test takes, in split-file order."""

    root: Path
    takes: list[Take]
    plain_prompts: list[str] = field(default_factory=list)
    performer_names: dict[int, str] = field(default_factory=dict)  # id -> original label, when labels were strings
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Take]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; the release has {SPLITS}")
        return [t for t in self.takes if t.split == name]

    def take(self, name: str) -> Take:
        for t in self.takes:
            if t.name == name:
                return t
        raise KeyError(f"{self.root}: no take named {name!r}")

    def load_motion(self, take: Take | str) -> FaceMotion:
        """The take's motion as stored (60 fps capture), captioned with its first caption."""
        take = self.take(take) if isinstance(take, str) else take
        values, valid, fps, metadata = load_motion_arrays(take.path)
        metadata.update(take=take.name, split=take.split)
        if take.performer is not None:
            metadata["performer"] = take.performer
        return FaceMotion(values, fps=fps, valid=valid, caption=take.captions[0], metadata=metadata)

    def fingerprint(self) -> str:
        """sha256 over the names and bytes of every file the release consists of.

        Keys the build cache: two folders with identical content share one built dataset, and any
        edit (a caption, a split line, a motion value) gives a new key.
        """
        files = [self.root / f"{s}.txt" for s in SPLITS]
        files += [self.root / name for name in ("texts_plain.txt", "performers.json") if (self.root / name).is_file()]
        for t in self.takes:
            files += [t.path, self.root / "texts" / f"{t.name}.txt"]
        digest = hashlib.sha256()
        for path in sorted(set(files)):
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            digest.update(str(path.stat().st_size).encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


def load_motion_arrays(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """``(values [T, 61] float32, valid [T] bool, fps, metadata)`` of one motion file.

    Module-level (picklable) so the dataset build can run it in a process pool.
    ``.npy`` files are loaded with ``allow_pickle=False`` and taken to be the 60 fps capture.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: not a plain numeric .npy array ({err}); re-save it with np.save") from None
        if values.ndim != 2 or values.shape[1] != NUM_CHANNELS or not np.issubdtype(values.dtype, np.number):
            raise ValueError(
                f"{path}: expected a numeric [frames, {NUM_CHANNELS}] array in Live Link channel order, "
                f"got {values.dtype} {values.shape}"
            )
        with np.errstate(invalid="ignore", over="ignore"):
            bad = ~(np.abs(values.astype(np.float64)) <= MAX_ABS_MOTION_VALUE)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{path}, row {row} (frame {row}), column {col} ({CHANNELS[col]}): value {values[row, col]!r} is not "
                f"finite or beyond +-{MAX_ABS_MOTION_VALUE:g}; fix or re-export the take"
            )
        values = np.ascontiguousarray(values, dtype=np.float32)
        return values, np.ones(len(values), dtype=bool), float(CAPTURE_FPS), {"source": str(path)}
    motion = read_livelink_csv(path, max_abs_value=MAX_ABS_MOTION_VALUE)
    return motion.values, motion.valid, motion.fps, dict(motion.metadata)


def parse_caption_file(text: str) -> tuple[list[str], list[str]]:
    """Captions and POS-token strings of a ``texts/<take>.txt`` file (blank lines ignored).

    Each line is ``caption#word/POS word/POS ...`` with optional further ``#``-fields (HumanML3D
    writes start/end tags there), which are ignored.

    >>> parse_caption_file("A person smiles.#a/DET person/NOUN smile/VERB#0.0#0.0\\n\\nA grin#\\n")
    (['A person smiles.', 'A grin'], ['a/DET person/NOUN smile/VERB', ''])
    """
    captions, tokens = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        caption, _, rest = line.partition("#")
        caption = caption.strip()
        if caption:
            captions.append(caption)
            tokens.append(rest.split("#", 1)[0].strip())
    return captions, tokens


class _BadText(Exception):
    def __init__(self, detail: str):
        self.detail = detail


def read_text_strict(path: Path) -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped); raises ``_BadText`` naming the line and byte otherwise."""
    try:
        return decode_utf8(path.read_bytes())
    except NotUTF8Error as err:
        raise _BadText(str(err)) from None


def _read_text_or_problem(root: Path, path: Path, problems: list[tuple[str, str, str]]) -> str | None:
    try:
        return read_text_strict(path)
    except _BadText as bad:
        problems.append(("bad_text", path.relative_to(root).as_posix(), bad.detail))
        return None


def _read_split_file(root: Path, path: Path, problems: list[tuple[str, str, str]]) -> list[str]:
    names = []
    text = _read_text_or_problem(root, path, problems)
    if text is None:  # without the split, every take would also be reported as unsplit: stop here
        raise ReleaseFormatError(root, problems)
    for line in text.splitlines():
        name = line.strip()
        if name:
            stem, suffix = os.path.splitext(name)
            names.append(stem if suffix.lower() in MOTION_SUFFIXES + (".txt",) else name)
    return names


def _performer_ids(path: Path, problems: list[tuple[str, str, str]]) -> tuple[dict[str, int], dict[int, str]]:
    """Map take -> integer performer id. Integer labels (or digit strings) are kept as they are;
    other string labels are numbered in sorted order and the names returned for the record."""
    try:
        raw = json.loads(read_text_strict(path))
    except _BadText as bad:
        problems.append(("bad_text", path.name, bad.detail))
        return {}, {}
    except json.JSONDecodeError as err:
        problems.append(("bad_performers", path.name, f"not valid JSON: {err}"))
        return {}, {}
    if not isinstance(raw, dict):
        problems.append(("bad_performers", path.name, f"top level is a {type(raw).__name__}, not an object"))
        return {}, {}
    labels = {}
    for take, label in raw.items():
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            problems.append(("bad_performers", take, f"performer {label!r} is neither an integer nor a string"))
        else:
            labels[take] = label
    if all(isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()) for v in labels.values()):
        return {k: int(v) for k, v in labels.items()}, {}
    names = sorted({str(v) for v in labels.values()})
    number = {n: i for i, n in enumerate(names)}
    return {k: number[str(v)] for k, v in labels.items()}, {i: n for n, i in number.items()}


def read_release(root: str | os.PathLike) -> Release:
    """Read and validate an Express4D release folder.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ReleaseFormatError: anything inconsistent; every problem is listed, by take name.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected an Express4D release with data/, texts/, "
                                "train.txt and test.txt)")  # fmt: skip
    problems: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    for required in ("data", "texts", "train.txt", "test.txt"):
        if not (root / required).exists():
            problems.append(("missing_file", required + ("/" if "." not in required else ""), ""))
    if problems:
        raise ReleaseFormatError(root, problems)

    # motion files by take name
    motion_files: dict[str, list[Path]] = defaultdict(list)
    for path in (root / "data").iterdir():
        if path.suffix.lower() in MOTION_SUFFIXES and path.is_file():
            motion_files[path.stem].append(path)
    text_files = {p.stem: p for p in (root / "texts").glob("*.txt") if p.is_file()}

    split_of: dict[str, str] = {}
    ordered: list[tuple[str, str]] = []
    for split in SPLITS:
        seen: set[str] = set()
        for name in _read_split_file(root, root / f"{split}.txt", problems):
            if name in seen:
                problems.append(("duplicate", name, f"{split}.txt"))
                continue
            seen.add(name)
            if name in split_of:
                problems.append(("both_splits", name, ""))
                continue
            split_of[name] = split
            ordered.append((name, split))

    performers: dict[str, int] = {}
    performer_names: dict[int, str] = {}
    if (root / "performers.json").is_file():
        performers, performer_names = _performer_ids(root / "performers.json", problems)
        unknown = sorted(set(performers) - set(split_of))
        if unknown:
            warnings.append(f"performers.json names {len(unknown)} take(s) not in any split: {', '.join(unknown)}")

    takes: list[Take] = []
    for name, split in ordered:
        files = motion_files.get(name, [])
        if not files:
            problems.append(("no_data", name, f"{split}.txt"))
        elif len(files) > 1:
            problems.append(("ambiguous_data", name, ""))
        text_path = text_files.get(name)
        captions: list[str] = []
        tokens: list[str] = []
        if text_path is None:
            problems.append(("no_text", name, f"{split}.txt"))
        else:
            text = _read_text_or_problem(root, text_path, problems)
            if text is not None:
                captions, tokens = parse_caption_file(text)
            if text is not None and not captions:
                problems.append(("empty_caption", f"texts/{text_path.name}", ""))
        if len(files) == 1 and captions:
            takes.append(Take(name, split, files[0], tuple(captions), tuple(tokens), performers.get(name)))

    for name in sorted(set(motion_files) - set(split_of)):
        problems.append(("unsplit_data", f"data/{motion_files[name][0].name}", ""))
    orphan_texts = sorted(set(text_files) - set(split_of) - set(motion_files))
    if orphan_texts:
        warnings.append(f"{len(orphan_texts)} caption file(s) in texts/ belong to no take and are ignored: "
                        + ", ".join(orphan_texts))  # fmt: skip
    if problems:
        raise ReleaseFormatError(root, problems)
    if not takes:
        raise ReleaseFormatError(root, [("missing_file", "train.txt", "no take listed in train.txt or test.txt")])
    for message in warnings:
        logger.warning("%s: %s", root, message)

    plain_prompts: list[str] = []
    if (root / "texts_plain.txt").is_file():
        text = _read_text_or_problem(root, root / "texts_plain.txt", problems)
        if problems:
            raise ReleaseFormatError(root, problems)
        plain_prompts = [ln.strip() for ln in (text or "").splitlines()]
    return Release(root, takes, plain_prompts, performer_names, warnings)


def is_release_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a release root (split files plus data/ and texts/)."""
    path = Path(path)
    return all((path / p).exists() for p in ("train.txt", "test.txt", "data", "texts"))



def write_release(
    root: str | os.PathLike,
    clips: Iterable[tuple[str, str, FaceMotion | np.ndarray, Sequence[str]]],
    *,
    performers: Mapping[str, int] | None = None,
    motion_format: str = "csv",
) -> Path:
    """Write takes in the official release layout (e.g. your own Live Link recordings, to extend the benchmark).

    ``clips`` yields ``(name, split, motion, captions)``; a caption may carry its POS tokens after a
    ``#`` as in the official files. Motions are written as Live Link CSVs at 60 fps (``motion_format="csv"``)
    or as ``[T, 61]`` float32 ``.npy`` arrays (``"npy"``, which must already be at 60 fps). The folder is
    written next to ``root`` and renamed into place; ``root`` must not exist.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root}: exists already; choose a new folder")
    if motion_format not in ("csv", "npy"):
        raise ValueError(f"motion_format must be 'csv' or 'npy', got {motion_format!r}")
    with atomic_folder(root, replace=False) as tmp:
        (tmp / "data").mkdir()
        (tmp / "texts").mkdir()
        names: dict[str, list[str]] = {s: [] for s in SPLITS}
        for name, split, motion, captions in clips:
            if split not in SPLITS:
                raise ValueError(f"take {name!r}: split must be one of {SPLITS}, got {split!r}")
            if not captions:
                raise ValueError(f"take {name!r}: needs at least one caption")
            names[split].append(name)
            if motion_format == "csv":
                motion = motion if isinstance(motion, FaceMotion) else FaceMotion(motion, fps=CAPTURE_FPS)
                write_livelink_csv(motion, tmp / "data" / f"{name}.csv", fps=CAPTURE_FPS)
            else:
                values = motion.resample(CAPTURE_FPS).values if isinstance(motion, FaceMotion) else motion
                np.save(tmp / "data" / f"{name}.npy", np.asarray(values, dtype=np.float32), allow_pickle=False)
            lines = [c if "#" in c else f"{c}#" for c in captions]
            (tmp / "texts" / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        for split, split_names in names.items():
            (tmp / f"{split}.txt").write_text("".join(f"{n}\n" for n in split_names), encoding="utf-8")
        if performers is not None:
            (tmp / "performers.json").write_text(json.dumps(dict(performers), indent=1) + "\n", encoding="utf-8")
    return root
