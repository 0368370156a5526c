"""The Express4D data as a Hugging Face dataset: build, load, describe and push.

``build_dataset`` turns a release folder (see :mod:`express4d_hf.data.release`) into a folder that
``datasets.load_dataset(folder)`` (and the Hub) understands::

    out_dir/
      README.md                     dataset card; its YAML declares the features and the split files
      data/train-00000-of-0000N.parquet, data/test-...parquet
      stats.json                    NormStats of the TRAIN split at 20 fps (DESIGN.md defect 1 fixed)
      express4d.json                build manifest: data fingerprint, clip counts, builder version

``motion`` is stored as ``Array2D((None, 61), "float32")``: it decodes straight to ``[T, 61]`` numpy
arrays, about 5x faster than the same bytes declared as nested float lists when a whole split is read
in numpy format (``bench/bench_build.py`` measures it).

``load_express4d(data)`` resolves ``None`` (the procedural corpus, synthesised and built once into
the cache), a release folder (built into the cache, keyed by the release's content fingerprint), a
built folder, or a Hub repo id, and returns a ``DatasetDict(train, test)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..arkit import CHANNELS, NUM_CHANNELS
from ..constants import HUB_CARDS_DIR, TRAIN_FPS
from ..livelink import FaceMotion, LiveLinkFormatError, atomic_write_text, replace_folder
from .release import SPLITS, Release, ReleaseFormatError, Take, is_release_dir, load_motion_arrays, read_release
from .stats import NormStats

logger = logging.getLogger(__name__)

MANIFEST_NAME = "express4d.json"
STATS_NAME = "stats.json"
CARD_NAME = "README.md"
FORMAT_VERSION = 1
REPO_ID_PLACEHOLDER = "your-username/express4d"
DEFAULT_MAX_SHARD_BYTES = 256 << 20  # keep each parquet file well under the Hub's recommended 1 GB
PROCEDURAL_NUM_CLIPS, PROCEDURAL_PARTICIPANTS, PROCEDURAL_SEED = 1205, 18, 0

LICENSE_TEXT = (
    "**Placeholder, to be replaced by the authors' exact terms.** The Express4D data is released by its "
    "authors for **non-commercial research use only**, on request "
    "([project page](https://jaron1990.github.io/Express4D/)). By requesting access you agree: to use the data "
    "for research only; **not to create deep-fakes** or otherwise impersonate, identify or harm the performers "
    "or anyone else; not to redistribute the data (share this gated repository instead); and to cite the paper "
    "below. The code of express4d-hf is Apache-2.0; that licence does not extend to the data."
)
GATED_PROMPT = (
    "Express4D is released for non-commercial research only. The clips are facial performances of real people: "
    "you must not use them to create deep-fakes, to impersonate or identify anyone, or redistribute them."
)
GATED_FIELDS = {
    "Name": "text",
    "Affiliation": "text",
    "Intended use (one sentence)": "text",
    "I will use this data for non-commercial research only": "checkbox",
    "I will not create deep-fakes or impersonate, identify or harm the performers": "checkbox",
    "I will not redistribute the data and will cite Aloni et al., arXiv 2508.12438": "checkbox",
}


class DatasetExistsError(ValueError):
    """The output folder exists already; pass ``overwrite=True`` (``--overwrite``) to replace it."""


def dataset_features():
    """The ``datasets.Features`` of one row (one take)."""
    from datasets import Array2D, Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "caption": Value("string"),
            "captions": List(Value("string")),
            "tokens": List(Value("string")),
            "performer": Value("int32"),
            "fps": Value("float32"),
            "num_frames": Value("int32"),
            "motion": Array2D((None, NUM_CHANNELS), "float32"),
            "valid": List(Value("bool")),
        }
    )


# --- reading the release (optionally in a process pool) --------------------------------------------
@dataclass
class _LoadedTake:
    values: np.ndarray  # [T, 61] float32 as stored (60 fps)
    valid: np.ndarray  # [T] bool
    fps: float
    values_train_fps: np.ndarray | None  # [T', 61] at TRAIN_FPS, train takes only (for the stats)


def _load_take_for_build(job: tuple[str, bool]) -> tuple[_LoadedTake | None, str | None]:
    """Worker: read one motion file; errors come back as text (custom exceptions do not unpickle)."""
    path, want_train_fps = job
    try:
        values, valid, fps, _ = load_motion_arrays(path)
        if len(values) == 0:
            return None, "no frames"
        resampled = FaceMotion(values, fps=fps).resample(TRAIN_FPS).values if want_train_fps else None
        return _LoadedTake(values, valid, fps, resampled), None
    except (LiveLinkFormatError, ValueError, OSError) as err:
        return None, str(err)


def _default_num_proc(num_items: int) -> int:
    return 1 if num_items < 64 else max(1, min(os.cpu_count() or 1, 8))


def _load_takes(takes: Sequence[Take], root: Path, num_proc: int | None, progress: bool) -> list[_LoadedTake]:
    from tqdm.auto import tqdm

    jobs = [(str(t.path), t.split == "train") for t in takes]
    num_proc = _default_num_proc(len(jobs)) if num_proc is None else max(1, int(num_proc))
    bar = dict(total=len(jobs), desc="reading takes", unit="take", disable=not progress)
    results = None
    if num_proc > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        # fork where it exists: workers need only numpy/pandas/scipy, start instantly and, unlike
        # spawn/forkserver, do not re-import the caller's __main__ (scripts, notebooks, stdin).
        context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        chunksize = max(1, len(jobs) // (num_proc * 8))
        try:
            with ProcessPoolExecutor(num_proc, mp_context=context) as pool:
                results = list(tqdm(pool.map(_load_take_for_build, jobs, chunksize=chunksize), **bar))
        except BrokenProcessPool as err:
            logger.warning("process pool failed (%s); reading the takes in this process instead", err)
    if results is None:
        results = [_load_take_for_build(job) for job in tqdm(jobs, **bar)]
    problems = [("bad_motion", t.path.name, err) for t, (_, err) in zip(takes, results) if err is not None]
    if problems:
        raise ReleaseFormatError(root, problems)
    return [loaded for loaded, _ in results]  # type: ignore[misc]


# --- fingerprints and summaries ---------------------------------------------------------------------
def _data_fingerprint(rows_by_split: dict[str, list[tuple[Take, _LoadedTake]]]) -> str:
    """sha256 over split, id, captions and motion bytes of every row, in order."""
    import hashlib

    digest = hashlib.sha256(f"express4d-hf/{FORMAT_VERSION}".encode())
    for split, rows in rows_by_split.items():
        for take, loaded in rows:
            digest.update(f"\0{split}\0{take.name}\0{json.dumps(list(take.captions))}\0{loaded.fps}\0".encode())
            digest.update(np.ascontiguousarray(loaded.values, dtype="<f4").tobytes())
    return digest.hexdigest()


def _duration_summary(num_frames: Sequence[int], fps: Sequence[float]) -> dict[str, float]:
    seconds = np.asarray(num_frames, dtype=np.float64) / np.asarray(fps, dtype=np.float64)
    if seconds.size == 0:
        return {"min_s": 0.0, "mean_s": 0.0, "max_s": 0.0, "total_s": 0.0}
    return {"min_s": float(seconds.min()), "mean_s": float(seconds.mean()), "max_s": float(seconds.max()),
            "total_s": float(seconds.sum())}  # fmt: skip


def stats_summary_lines(stats: NormStats, top: int = 3) -> list[str]:
    """A few human-readable lines about a :class:`NormStats` (for cards and ``express4d data info``)."""
    flat = [c for c, s in zip(CHANNELS, stats.std) if s <= stats.eps * (1 + 1e-6)]
    order = np.argsort(-stats.std)[:top]
    lines = [
        f"computed on split {stats.info.get('split', '?')!r}, {stats.info.get('num_clips', '?')} clips, "
        f"{stats.info.get('num_frames', '?')} frames at {stats.fps:g} fps, std floor {stats.eps:g}",
        "largest std: " + ", ".join(f"{CHANNELS[i]} {stats.std[i]:.3f}" for i in order),
        f"{len(flat)} flat channel(s) at the floor" + (": " + ", ".join(flat) if flat else ""),
    ]
    return lines


# --- the card -----------------------------------------------------------------------------------------
def card_template_path() -> Path:
    """``express4d_hf/hub_cards/dataset_card.md``, the template of the dataset card."""
    path = HUB_CARDS_DIR / "dataset_card.md"
    if not path.is_file():
        raise FileNotFoundError(f"dataset card template {path} is missing: reinstall express4d-hf")
    return path


def _render_card(manifest: dict[str, Any], stats: NormStats, shard_files: dict[str, list[str]]) -> str:
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    splits = manifest["splits"]
    total = sum(s["num_clips"] for s in splits.values())
    size_category = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K"
    card_data = DatasetCardData(
        pretty_name=manifest["pretty_name"],
        language=["en"],
        license="other",
        license_name="express4d-research-only",
        license_link="https://jaron1990.github.io/Express4D/",
        size_categories=[size_category],
        task_categories=["text-to-3d"],
        tags=["facial-animation", "motion-generation", "text-to-motion", "arkit", "blendshapes", "live-link-face"],
        extra_gated_prompt=GATED_PROMPT,
        extra_gated_fields=GATED_FIELDS,
        configs=[
            {
                "config_name": "default",
                "default": True,
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in shard_files],
            }
        ],
    )
    split_dict = SplitDict()
    for name, info in splits.items():
        split_dict.add(SplitInfo(name=name, num_bytes=int(info["num_bytes"]), num_examples=int(info["num_clips"])))
    info = DatasetInfo(features=dataset_features(), splits=split_dict,
                       dataset_size=sum(int(s["num_bytes"]) for s in splits.values()))  # fmt: skip
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)

    split_rows = [dict(name=name, **info) for name, info in splits.items()]
    performers = manifest.get("num_performers") or 0
    card = DatasetCard.from_template(
        card_data,
        template_path=str(card_template_path()),
        pretty_name=manifest["pretty_name"],
        source_description=manifest["source"],
        builder_version=manifest["builder_version"],
        fingerprint=manifest["fingerprint"],
        repo_id=REPO_ID_PLACEHOLDER,
        splits=split_rows,
        num_performers_text=f"{performers} performers in all. " if performers else "",
        stats_fps=f"{stats.fps:g}",
        stats_eps=f"{stats.eps:g}",
        stats_summary="\n".join(f"- {line}" for line in stats_summary_lines(stats)),
        license_text=LICENSE_TEXT,
    )
    return str(card)


def _check_card(folder: Path, shard_files: dict[str, list[str]]) -> None:
    """Parse the written card back the way ``datasets`` does and fail loudly on any mismatch.

    Guards the YAML round trip of the ``Array2D`` feature (huggingface/datasets#7243) and the
    ``configs`` globs, so a build that ``load_dataset`` would misread never gets renamed into place.
    """
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(folder / CARD_NAME)
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    features = next(iter(infos.values())).features if infos else None
    if features != dataset_features():
        raise RuntimeError(f"{folder / CARD_NAME}: the features in the card YAML do not parse back ({features})")
    configs = card.data.to_dict().get("configs") or []
    patterns = {d["split"]: d["path"] for d in configs[0]["data_files"]} if configs else {}
    for split, files in shard_files.items():
        matched = sorted(p.relative_to(folder).as_posix() for p in folder.glob(patterns.get(split, "<none>")))
        if matched != sorted(files):
            raise RuntimeError(f"{folder / CARD_NAME}: configs pattern for {split!r} matches {matched}, not {files}")


# --- build ---------------------------------------------------------------------------------------------
def _rows_to_table(rows: list[tuple[Take, _LoadedTake]]):
    """An Arrow table of rows, built column-wise from the numpy arrays (no per-value Python objects)."""
    import pyarrow as pa

    lengths = np.fromiter((len(m.values) for _, m in rows), dtype=np.int64, count=len(rows))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = np.concatenate([m.values for _, m in rows]).reshape(-1)
    frames = pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, NUM_CHANNELS, dtype=np.int32)), pa.array(flat))
    return pa.table(
        {
            "id": [t.name for t, _ in rows],
            "caption": [t.captions[0] for t, _ in rows],
            "captions": [list(t.captions) for t, _ in rows],
            "tokens": [list(t.tokens) for t, _ in rows],
            "performer": pa.array([-1 if t.performer is None else int(t.performer) for t, _ in rows], pa.int32()),
            "fps": pa.array([float(m.fps) for _, m in rows], pa.float32()),
            "num_frames": pa.array(lengths.astype(np.int32)),
            "motion": pa.ListArray.from_arrays(offsets, frames),
            "valid": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate([m.valid for _, m in rows]))),
        }
    )


def _write_split(folder: Path, split: str, rows: list[tuple[Take, _LoadedTake]], max_shard_bytes: int) -> list[str]:
    """Write ``rows`` as ``data/<split>-0000i-of-0000N.parquet`` shards of about ``max_shard_bytes`` each."""
    from datasets.arrow_writer import ParquetWriter

    features = dataset_features()
    sizes = np.array([loaded.values.nbytes for _, loaded in rows], dtype=np.int64)
    num_shards = max(1, math.ceil(int(sizes.sum()) / max_shard_bytes))
    bounds = np.linspace(0, len(rows), num_shards + 1).round().astype(int)
    files = []
    for shard in range(num_shards):
        rel = f"data/{split}-{shard:05d}-of-{num_shards:05d}.parquet"
        # datasets' writer: schema metadata with the features, per-column options, content-defined
        # chunking (so re-uploads of a rebuilt dataset deduplicate on the Hub).
        writer = ParquetWriter(path=str(folder / rel), features=features)
        try:
            chunk = rows[bounds[shard] : bounds[shard + 1]]
            for start in range(0, len(chunk), 128):
                writer.write_table(_rows_to_table(chunk[start : start + 128]))
            writer.finalize()
        finally:
            writer.close()
        files.append(rel)
    return files


def build_dataset(
    release_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    num_proc: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    source_description: str | None = None,
    pretty_name: str = "Express4D",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    release_fingerprint: str | None = None,
) -> Path:
    """Build the Hugging Face dataset folder of a release (atomically) and return its path.

    Args:
        release_dir: an official release folder (validated first; every problem reported at once).
        out_dir: where the dataset goes. It appears only when the build succeeded (written to a
            temporary sibling folder, then renamed).
        num_proc: processes that parse the CSVs (default: 1 for small releases, else the CPU count).
        progress: show progress bars.
        overwrite: replace an existing ``out_dir``.
        source_description: one sentence for the card about where the data came from.
        max_shard_bytes: target size of one parquet file (by motion bytes).
        release_fingerprint: content hash of the release, recorded in the manifest when known.

    Raises:
        ReleaseFormatError: the release is inconsistent or a motion file cannot be read.
        DatasetExistsError: ``out_dir`` exists and ``overwrite`` is False.
    """
    release_dir, out_dir = Path(release_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not overwrite:
        raise DatasetExistsError(f"{out_dir}: exists already; pass --overwrite (overwrite=True) to replace it")
    if out_dir == release_dir or release_dir in out_dir.parents:
        raise ValueError(f"{out_dir}: put the built dataset outside the release folder {release_dir}")
    release = read_release(release_dir)
    loaded = _load_takes(release.takes, release.root, num_proc, progress)
    rows_by_split = {s: [(t, m) for t, m in zip(release.takes, loaded) if t.split == s] for s in SPLITS}
    rows_by_split = {s: rows for s, rows in rows_by_split.items() if rows}
    train_rows = rows_by_split.get("train", [])
    if not train_rows:
        raise ReleaseFormatError(release.root, [("missing_file", "train.txt", "lists no take: stats need train clips")])
    stats = NormStats.compute(
        (m.values_train_fps for _, m in train_rows), fps=TRAIN_FPS, split="train", num_clips=len(train_rows)
    )
    fingerprint = _data_fingerprint(rows_by_split)
    stats.info["data_fingerprint"] = fingerprint

    tmp = out_dir.parent / f".{out_dir.name}.building-{uuid.uuid4().hex[:8]}"
    (tmp / "data").mkdir(parents=True)
    try:
        shard_files = {s: _write_split(tmp, s, rows, max_shard_bytes) for s, rows in rows_by_split.items()}
        performers = {t.performer for t in release.takes if t.performer is not None}
        manifest = {
            "format": f"express4d-hf/{FORMAT_VERSION}",
            "builder_version": __version__,
            "pretty_name": pretty_name,
            "source": source_description or f"an Express4D release folder ({release.root.name}).",
            "fingerprint": fingerprint,
            "release_fingerprint": release_fingerprint,
            "channels": list(CHANNELS),
            "num_performers": len(performers),
            "performer_names": {str(k): v for k, v in release.performer_names.items()},
            "splits": {
                s: {
                    "num_clips": len(rows),
                    "num_frames": int(sum(len(m.values) for _, m in rows)),
                    "num_bytes": int(sum(m.values.nbytes + m.valid.nbytes for _, m in rows)),
                    **_duration_summary([len(m.values) for _, m in rows], [m.fps for _, m in rows]),
                    "files": shard_files[s],
                }
                for s, rows in rows_by_split.items()
            },
            "stats": {"file": STATS_NAME, "split": "train", "fps": TRAIN_FPS, "eps": stats.eps},
            "warnings": release.warnings,
        }
        stats.save(tmp / STATS_NAME)
        atomic_write_text(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
        atomic_write_text(tmp / CARD_NAME, _render_card(manifest, stats, shard_files))
        _check_card(tmp, shard_files)
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built %s: %s (fingerprint %s)", out_dir,
                ", ".join(f"{s} {len(r)} clips" for s, r in rows_by_split.items()), fingerprint[:12])  # fmt: skip
    return out_dir


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` is replaced only with ``overwrite``."""
    if out_dir.exists() and not overwrite:
        raise DatasetExistsError(f"{out_dir}: appeared while building; pass overwrite=True to replace it")
    replace_folder(tmp, out_dir)


# --- resolving and loading --------------------------------------------------------------------------
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def default_cache_dir() -> Path:
    """``$EXPRESS4D_CACHE`` or ``~/.cache/express4d_hf``: where the procedural corpus and builds live."""
    env = os.environ.get("EXPRESS4D_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "express4d_hf"


def is_built_dataset(path: str | os.PathLike) -> bool:
    """True for a folder written by :func:`build_dataset` (card, stats and parquet shards)."""
    path = Path(path)
    return (path / CARD_NAME).is_file() and (path / STATS_NAME).is_file() and any((path / "data").glob("*.parquet"))


def _procedural_dataset(cache: Path, progress: bool) -> Path:
    try:
        from . import synthetic
    except ImportError as err:
        raise FileNotFoundError(f"the procedural corpus generator is not available ({err}); pass a release folder, a "
                                "built dataset folder or a Hub repo id instead") from None  # fmt: skip
    import hashlib

    # Key on the generator's source too, so a changed generator never serves a stale corpus.
    code = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    key = f"procedural-seed{PROCEDURAL_SEED}-n{PROCEDURAL_NUM_CLIPS}-{code}"
    target = cache / "datasets" / f"{key}-f{FORMAT_VERSION}"  # a new build format never reuses old builds
    if is_built_dataset(target):
        return target
    release_dir = cache / "corpus" / key
    if not is_release_dir(release_dir):
        logger.info("synthesising the procedural Express4D corpus (seed %d) into %s", PROCEDURAL_SEED, release_dir)
        # synthesize_release writes next to release_dir and renames into place: never half-written.
        synthetic.synthesize_release(release_dir, num_clips=PROCEDURAL_NUM_CLIPS, participants=PROCEDURAL_PARTICIPANTS,
                                     seed=PROCEDURAL_SEED, progress=progress)  # fmt: skip
    _build_into_cache(
        release_dir, target, progress, pretty_name="Express4D procedural stand-in",
        source_description=(f"the **procedural** Express4D-format corpus of express4d-hf (synthetic faces, "
                            f"{PROCEDURAL_NUM_CLIPS} clips, {PROCEDURAL_PARTICIPANTS} synthetic performers, seed "
                            f"{PROCEDURAL_SEED}), not the real capture. Use it to test code paths and pipelines; "
                            "report benchmark numbers on the official release only."),
    )  # fmt: skip
    return target


def _build_into_cache(release_dir: Path, target: Path, progress: bool, **kwargs: Any) -> None:
    try:
        build_dataset(release_dir, target, progress=progress, **kwargs)
    except DatasetExistsError:
        if not is_built_dataset(target):  # a half-written folder from something else: rebuild
            build_dataset(release_dir, target, progress=progress, overwrite=True, **kwargs)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset"))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise FileNotFoundError(
            f"{repo_id}: no such local folder, and as a Hub dataset it is not in the local Hugging Face cache while "
            f"the Hub cannot be reached ({type(err).__name__}). Go online once (unset HF_HUB_OFFLINE), or pass a "
            "local release or dataset folder"
        ) from None
    except HfHubHTTPError as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FileNotFoundError(
            f"{repo_id}: no such local folder, and downloading it from the Hub failed ({first_line}). Check the repo id, "
            "request access on its page if it is gated, and log in with `hf auth login`"
        ) from None


def resolve_dataset_dir(data: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                        *, progress: bool = True) -> Path:  # fmt: skip
    """The built dataset folder for ``data``, building or downloading it first when needed.

    ``data`` is ``None`` (the procedural corpus), a release folder, a built dataset folder, or a Hub
    dataset repo id (``owner/name``, fetched with ``huggingface_hub.snapshot_download``).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if data is None:
        return _procedural_dataset(cache, progress)
    path = Path(data).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path}: is a file; pass a release folder, a built dataset folder or a Hub repo id")
        if is_built_dataset(path):
            return path.resolve()
        if is_release_dir(path):
            release = read_release(path)
            fingerprint = release.fingerprint()
            target = cache / "datasets" / f"release-{fingerprint[:16]}-f{FORMAT_VERSION}"
            if not is_built_dataset(target):
                _build_into_cache(path, target, progress, release_fingerprint=fingerprint)
            return target
        raise ValueError(
            f"{path}: neither a built Express4D dataset (README.md, stats.json, data/*.parquet) nor a release "
            "folder (data/, texts/, train.txt, test.txt)"
        )
    if _REPO_ID.match(str(data)):
        folder = _download(str(data))
        if not (folder / STATS_NAME).is_file():
            raise ValueError(f"{data}: the Hub dataset has no stats.json; it was not built by `express4d data build`")
        return folder
    raise FileNotFoundError(f"{data}: no such folder, and not a Hugging Face dataset repo id (owner/name)")


def load_express4d(data: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                   *, progress: bool = True):  # fmt: skip
    """``DatasetDict(train, test)`` of the Express4D data (see :func:`resolve_dataset_dir` for ``data``).

    With ``cache_dir`` given, the ``datasets`` Arrow cache also goes under it (``<cache_dir>/hf_datasets``).
    """
    import datasets

    folder = resolve_dataset_dir(data, cache_dir, progress=progress)
    kwargs = {"cache_dir": str(Path(cache_dir).expanduser() / "hf_datasets")} if cache_dir is not None else {}
    silence = not progress and not datasets.are_progress_bars_disabled()
    if silence:
        datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(str(folder), **kwargs)
    finally:
        if silence:
            datasets.enable_progress_bars()


def dataset_stats(data: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> NormStats:
    """The train-split :class:`NormStats` shipped with the dataset (``stats.json``)."""
    return NormStats.load(resolve_dataset_dir(data, cache_dir) / STATS_NAME)


def dataset_manifest(data: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> dict:
    """The build manifest (``express4d.json``) of a built dataset."""
    folder = resolve_dataset_dir(data, cache_dir)
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: no {MANIFEST_NAME}; rebuild with `express4d data build`") from None


def dataset_fingerprint(data: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> str:
    """sha256 of the data (split, ids, captions, motion bytes) recorded at build time; put it in results JSON."""
    return dataset_manifest(data, cache_dir)["fingerprint"]


def dataset_summary(folder: str | os.PathLike) -> dict[str, Any]:
    """Clip counts, duration stats and caption examples per split of a built folder (reads parquet columns only)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    summary: dict[str, Any] = {"folder": str(folder), "fingerprint": manifest.get("fingerprint"), "splits": {}}
    for split in SPLITS:
        files = sorted((folder / "data").glob(f"{split}-*.parquet"))
        if not files:
            continue
        columns = ["id", "caption", "captions", "performer", "fps", "num_frames"]
        tables = [pq.read_table(f, columns=columns) for f in files]
        num_frames = np.concatenate([t.column("num_frames").to_numpy() for t in tables])
        fps = np.concatenate([t.column("fps").to_numpy() for t in tables])
        performers = np.concatenate([t.column("performer").to_numpy() for t in tables])
        captions = [c for t in tables for c in t.column("caption").to_pylist()]
        summary["splits"][split] = {
            "num_clips": int(len(num_frames)),
            "num_frames": int(num_frames.sum()),
            "fps": sorted({float(f) for f in fps}),
            "num_performers": int(len(set(performers[performers >= 0].tolist()))),
            "num_captions": int(sum(len(c) for t in tables for c in t.column("captions").to_pylist())),
            **_duration_summary(num_frames, fps),
            "caption_examples": captions[:3],
        }
    return summary


# --- push -------------------------------------------------------------------------------------------------
def push_dataset(out_dir: str | os.PathLike, repo_id: str, private: bool = False, dry_run: bool = False,
                 token: str | None = None) -> list[tuple[str, int]]:  # fmt: skip
    """Upload a built dataset folder to the Hub as a (gated) dataset repo; returns ``[(file, bytes)]``.

    ``dry_run`` prints the files and sizes and touches no network. Otherwise the card's placeholder
    repo id is replaced by ``repo_id``, the repo is created if needed, and the folder is uploaded in one commit.
    """
    folder = Path(out_dir).expanduser()
    if not is_built_dataset(folder):
        raise FileNotFoundError(f"{folder}: not a built dataset folder (README.md, stats.json, data/*.parquet); "
                                "run `express4d data build` first")  # fmt: skip
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repo id; use 'owner/name'")
    files = sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    total = sum(size for _, size in files)
    url = f"https://huggingface.co/datasets/{repo_id}"
    if dry_run:
        for name, size in files:
            print(f"{_human_bytes(size):>10}  {name}")
        print(f"{_human_bytes(total):>10}  total, {len(files)} files -> {url} "
              f"({'private' if private else 'public'}, gated). Dry run: nothing uploaded.")  # fmt: skip
        return files
    from huggingface_hub import HfApi

    card = folder / CARD_NAME
    text = card.read_text(encoding="utf-8")
    if REPO_ID_PLACEHOLDER in text:
        atomic_write_text(card, text.replace(REPO_ID_PLACEHOLDER, repo_id))
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    manifest = json.loads((folder / MANIFEST_NAME).read_text()) if (folder / MANIFEST_NAME).is_file() else {}
    api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
        allow_patterns=[name for name, _ in files],
        commit_message=f"Express4D dataset (fingerprint {str(manifest.get('fingerprint', '?'))[:12]})",
    )  # fmt: skip
    print(f"uploaded {len(files)} files ({_human_bytes(total)}) to {url}")
    return files


def _human_bytes(size: float) -> str:
    """
    >>> _human_bytes(1536), _human_bytes(12)
    ('1.5 KiB', '12 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


__all__ = [
    "DatasetExistsError", "Release", "ReleaseFormatError", "build_dataset", "dataset_features", "dataset_fingerprint",
    "dataset_manifest", "dataset_stats", "dataset_summary", "default_cache_dir", "is_built_dataset", "load_express4d",
    "push_dataset", "resolve_dataset_dir", "stats_summary_lines",
]  # fmt: skip
