"""Time `express4d data build` and compare loading ``motion`` as Array2D vs nested float lists.

    python bench/bench_build.py                  # 1205 procedural clips in a temporary folder
    python bench/bench_build.py --clips 200 --num-proc 1
    python bench/bench_build.py --release /path/to/Express4D

Prints: synthesis and build time, then for each storage of ``motion`` the ``load_dataset`` time with a
cold and a warm cache, the time to read every motion as numpy (``with_format("numpy")``) and to index
every row in the default (python) format. Both variants hold the same Parquet bytes; only the
declared feature differs, which is what decides how rows decode.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the build's workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def nested_list_copy(built: Path, out: Path) -> Path:
    """A copy of a built folder whose ``motion`` is declared ``List(List(float32))`` (card and parquet metadata)."""
    import json

    import pyarrow.parquet as pq
    from datasets import List, Value
    from huggingface_hub import DatasetCard

    from express4d_hf.data.hub import dataset_features

    features = dataset_features()
    features["motion"] = List(List(Value("float32")))
    shutil.copytree(built, out)
    for path in sorted((out / "data").glob("*.parquet")):
        table = pq.read_table(path)
        metadata = dict(table.schema.metadata or {})
        metadata[b"huggingface"] = json.dumps({"info": {"features": features.to_dict()}}).encode()
        table = table.cast(features.arrow_schema).replace_schema_metadata(metadata)
        pq.write_table(table, path)
    card = DatasetCard.load(out / "README.md")
    card.data["dataset_info"]["features"] = features._to_yaml_list()
    card.save(out / "README.md")
    return out


def time_loading(folder: Path, cache: Path) -> dict[str, float]:
    import datasets
    import numpy as np

    timings = {}
    start = time.perf_counter()
    dd = datasets.load_dataset(str(folder), cache_dir=str(cache))
    timings["load cold"] = time.perf_counter() - start
    start = time.perf_counter()
    dd = datasets.load_dataset(str(folder), cache_dir=str(cache))
    timings["load warm"] = time.perf_counter() - start
    train = dd["train"]
    start = time.perf_counter()
    motions = [np.asarray(m, dtype=np.float32) for m in train.with_format("numpy")["motion"]]
    timings["all motions, numpy format"] = time.perf_counter() - start
    assert motions[0].ndim == 2 and motions[0].shape[1] == 61, motions[0].shape
    start = time.perf_counter()
    for i in range(len(train)):
        np.asarray(train[i]["motion"], dtype=np.float32)
    timings["row by row, python format"] = time.perf_counter() - start
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=1205, help="procedural clips to synthesise (default 1205)")
    parser.add_argument("--release", type=Path, help="bench an existing release folder instead")
    parser.add_argument("--num-proc", type=int, default=None, help="CSV parsing processes (default: auto)")
    parser.add_argument("--keep", type=Path, help="keep the work folder here instead of a temporary one")
    parser.add_argument("--build-only", action="store_true", help="skip the load comparison")
    args = parser.parse_args(argv)

    from express4d_hf.data.hub import build_dataset
    from express4d_hf.data.release import read_release

    work = Path(tempfile.mkdtemp(prefix="express4d-bench-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        release = args.release
        if release is None:
            from express4d_hf.data.synthetic import synthesize_release

            start = time.perf_counter()
            release = synthesize_release(work / "release", num_clips=args.clips, participants=18, seed=0, progress=False)
            print(f"synthesised {args.clips} clips in {time.perf_counter() - start:.1f} s")
        num_takes = len(read_release(release).takes)
        import datasets  # noqa: F401  (imported before timing: the build's own work is what we measure)

        start, cpu_start = time.perf_counter(), _cpu_seconds()
        built = build_dataset(release, work / "built", num_proc=args.num_proc, progress=False)
        elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        size = sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
        print(f"build: {num_takes} clips in {elapsed:.2f} s wall, {cpu:.2f} s CPU incl. workers "
              f"({1000 * elapsed / num_takes:.1f} ms/clip, num_proc={args.num_proc or 'auto'}, {size / 2**20:.0f} MiB, "
              f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")  # fmt: skip

        if args.build_only:
            return 0
        variants = {"Array2D": built, "nested lists": nested_list_copy(built, work / "built-nested")}
        results = {name: time_loading(folder, work / f"hf-cache-{i}") for i, (name, folder) in enumerate(variants.items())}
        rows = list(next(iter(results.values())))
        print(f"\n{'(seconds)':<28}" + "".join(f"{name:>14}" for name in results) + f"{'ratio':>8}")
        for row in rows:
            a, b = (results[name][row] for name in variants)
            print(f"{row:<28}{a:>14.3f}{b:>14.3f}{b / a:>7.1f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
