"""Time the metric side of the 20-replication protocol on N embeddings of D dims (default 1000 x 512).

Per replication, exactly what ``evaluate_generator`` computes once the embeddings exist: shuffle,
R-Precision top-1..3 + MM-Dist over groups of 32, FID against the real Gaussian fit (a 512 x 512
``sqrtm``: the dominant cost), Diversity over min(300, N - 1) pairs. Generation and embedding are
excluded (they depend on the model). Random Gaussian embeddings stand in for evaluator output.
On a busy machine, multi-threaded BLAS can oversubscribe the cores and make ``sqrtm`` many times
slower; compare with ``OPENBLAS_NUM_THREADS=1`` (the report records the thread variables and load).

    python bench/bench_metrics.py                     # 1000 x 512, 20 replications
    python bench/bench_metrics.py --num 240 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from express4d_hf.evaluation.metrics import (
    diversity,
    frechet_distance_from_stats,
    gaussian_stats,
    matching_score,
    r_precision,
)
from express4d_hf.evaluation.protocol import replication_seed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=1000, help="embeddings per set (default 1000)")
    parser.add_argument("--dims", type=int, default=512, help="embedding dimension (default 512)")
    parser.add_argument("--replications", type=int, default=20, help="replications (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random embeddings")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    text = rng.normal(size=(args.num, args.dims))
    real = text + 0.5 * rng.normal(size=text.shape)
    generated = text + rng.normal(size=text.shape)

    started = time.perf_counter()
    real_stats = gaussian_stats(real)
    parts = {"r_precision_mm_dist_s": 0.0, "fid_s": 0.0, "diversity_s": 0.0}
    fids = []
    for r in range(args.replications):
        order = np.random.default_rng(replication_seed(args.seed, r, 0)).permutation(args.num)
        t0 = time.perf_counter()
        r_precision(text[order], generated[order])
        matching_score(text[order], generated[order])
        t1 = time.perf_counter()
        fids.append(frechet_distance_from_stats(*real_stats, *gaussian_stats(generated[order])))
        t2 = time.perf_counter()
        diversity(generated, None, replication_seed(args.seed, r, 2))
        t3 = time.perf_counter()
        parts["r_precision_mm_dist_s"] += t1 - t0
        parts["fid_s"] += t2 - t1
        parts["diversity_s"] += t3 - t2
    total = time.perf_counter() - started

    report = {
        "num": args.num,
        "dims": args.dims,
        "replications": args.replications,
        "total_s": round(total, 3),
        "per_replication_s": round(total / args.replications, 4),
        **{k: round(v, 3) for k, v in parts.items()},
        "fid_mean": round(float(np.mean(fids)), 3),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "blas_threads_env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
        },
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
