"""Score MDM's samplers against each other on a finished benchmark folder: quality at speed.

For each ``SAMPLER:STEPS[:ETA[:GUIDANCE[:RESCALE]]]`` spec, the benchmark's fast MDM row is re-scored in a copy of
``--run`` (the trained evaluator and MDM are reused; only that row is computed), with the same protocol
(replications, clips, seeds) as the run. The table puts each next to the run's 1000-step DDPM row, whose
95% interval is the bar a fast sampler has to reach.

    express4d benchmark --preset paper --models mdm --out runs/paper   # trains, scores DDPM too
    python bench/bench_mdm_samplers.py --run runs/paper ddim:50 ddim:50:0.5 dpmsolver++:12 --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def parse_spec(spec: str) -> dict:
    parts = spec.split(":")
    if not 2 <= len(parts) <= 5:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected SAMPLER:STEPS[:ETA[:GUIDANCE[:RESCALE]]], e.g. ddim:50:0.5")
    out = {"fast_sampler": parts[0], "fast_steps": int(parts[1])}
    if len(parts) > 2:
        out["fast_eta"] = float(parts[2])
    if len(parts) > 3:
        out["guidance_scale"] = float(parts[3])
    if len(parts) > 4:
        out["fast_guidance_rescale"] = float(parts[4])
    return out


TABLE_HEADER = "| sampler | R@3 ↑ | FID ↓ | MM-Dist ↓ | Diversity → | AITS (s/clip) |\n|---|---|---|---|---|---|"


def table_line(row: dict) -> str:
    m = row["metrics"]
    cells = [f"{m[k]['mean']:.3f} ± {m[k]['ci95']:.3f}" for k in ("r_precision_top3", "fid", "mm_dist", "diversity")]
    return f"| {row['spec']} | " + " | ".join(cells) + f" | {row['aits_s']:.4f} |"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished `express4d benchmark` folder (with its DDPM row)")
    parser.add_argument("specs", nargs="+", type=parse_spec, help="SAMPLER:STEPS[:ETA[:GUIDANCE[:RESCALE]]] (ddim, dpmsolver++, sde-dpmsolver++)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    from express4d_hf.apps.benchmark import BenchmarkConfig, run_benchmark
    from express4d_hf.training.common import run_metadata, write_json

    run = Path(args.run)
    report = json.loads((run / "results.json").read_text())
    fields = set(BenchmarkConfig.__dataclass_fields__)
    settings = {k: v for k, v in report["meta"]["config"].items() if k in fields}
    settings.update(models=("mdm",), full_ddpm=False, multimodality=False)
    rows = [dict(r, spec="DDPM:1000 (official)") for r in report["rows"] if r["model"] == "mdm_ddpm_full"]
    with tempfile.TemporaryDirectory(dir=run.parent) as scratch:
        for spec in args.specs:
            folder = Path(scratch) / "run"
            shutil.rmtree(folder, ignore_errors=True)
            # the trained evaluator and MDM (no checkpoints), the data's stage records and the scored rows
            shutil.copytree(run, folder, ignore=shutil.ignore_patterns("t2m_gpt", "samples", "checkpoints"))
            config = BenchmarkConfig(**{**settings, **spec})
            result = run_benchmark(report["meta"]["data"]["path"], folder, config, progress=False)
            fast = next(r for r in result["rows"] if r["model"] == "mdm_fast")
            label = (f"{config.fast_sampler}:{config.fast_steps}, eta {config.fast_eta:g}, guidance {config.guidance_scale:g}"
                     f", rescale {config.fast_guidance_rescale:g}")  # fmt: skip
            rows.append(dict(fast, spec=label))
            print(table_line(rows[-1]), flush=True)  # as it comes: a long sweep may be cut short
    print("\n".join([TABLE_HEADER, *map(table_line, rows)]))
    result = run_metadata(vars(args) | {"specs": args.specs}, run=str(run), rows=rows)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
