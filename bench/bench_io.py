"""Live Link Face CSV parse and write speed (MB/s), on typical takes and one long take.

    python bench/bench_io.py [--minutes 10]

The target for parsing is >= 50 MB/s on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from express4d_hf import FaceMotion, read_livelink_csv
from express4d_hf.livelink import write_livelink_csv


def _motion(seconds: float, seed: int) -> FaceMotion:
    rng = np.random.default_rng(seed)
    n = int(seconds * 60)
    t = np.arange(n)[:, None] / 60.0
    values = 0.5 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.1, 2, (1, 61)) * t + rng.uniform(0, 6, (1, 61)))
    return FaceMotion(values.astype(np.float32), fps=60)


def _time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long take")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'case':<28}{'MB':>8}{'parse s':>10}{'parse MB/s':>12}{'write s':>10}{'write MB/s':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("typical take (6 s) x 200", [_motion(6, s) for s in range(200)]),
                 (f"long take ({args.minutes:g} min)", [_motion(args.minutes * 60, 0)])]  # fmt: skip
        for name, motions in cases:
            paths = [Path(tmp) / f"{name[:4]}_{i}.csv" for i in range(len(motions))]
            write_s = _time(lambda: [write_livelink_csv(m, p) for m, p in zip(motions, paths)], 1)
            mb = sum(p.stat().st_size for p in paths) / 1e6
            parse_s = _time(lambda: [read_livelink_csv(p) for p in paths], args.repeat)
            print(f"{name:<28}{mb:>8.1f}{parse_s:>10.3f}{mb / parse_s:>12.1f}{write_s:>10.3f}{mb / write_s:>12.1f}")


if __name__ == "__main__":
    main()
