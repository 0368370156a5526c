"""The files a scoring run leaves: ``results.json`` (every per-replication value, seeds, versions, hardware, the
evaluator's fingerprint), ``results.md`` (the table and how it was made) and ``metrics.png`` (bars with 95%
intervals). ``express4d benchmark`` and ``express4d evaluate`` both write them here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_path, atomic_write_text
from .protocol import EvaluationResult, format_results_table

PLOTTED_METRICS = ("r_precision_top3", "fid", "mm_dist", "diversity", "r_precision_top1", "multimodality")


def write_results(out_dir: str | Path, results: dict[str, EvaluationResult], titles: dict[str, str],
                  meta: dict[str, Any], heading: str, notes: str, extra_columns: dict[str, dict[str, str]] | None = None,
                  row_extras: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the three files into ``out_dir`` (atomically) and return the ``results.json`` content.

    ``results`` maps a row's key to its result, ``titles`` the key to the row's title; ``notes`` is markdown
    placed under the table. ``extra_columns`` (column title -> row title -> cell) and ``row_extras`` (row key ->
    more JSON fields of that row) carry scores that are not protocol metrics (the benchmark's order accuracy).
    """
    out = Path(out_dir)
    row_extras = row_extras or {}
    report = {
        "rows": [{"model": name, "title": titles[name], **result.to_dict(), **row_extras.get(name, {})}
                 for name, result in results.items()],  # fmt: skip
        "meta": meta,
    }
    atomic_write_text(out / "results.json", json.dumps(report, indent=2, default=str) + "\n")
    table = format_results_table({titles[name]: result for name, result in results.items()}, extra_columns=extra_columns)
    atomic_write_text(out / "results.md", f"# {heading}\n\n{table}\n\n{notes}")
    plot_metrics(results, titles, out / "metrics.png")
    return report


def plot_metrics(results: dict[str, EvaluationResult], titles: dict[str, str], path: str | Path) -> None:
    """Bars with 95% intervals, one panel per metric, one bar per row (FID on a log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in PLOTTED_METRICS if any(m in r.values for r in results.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), dpi=110)
    names = list(results)
    colors = plt.get_cmap("tab10")(np.arange(len(names)))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        means = [results[n].mean(metric) if metric in results[n].values else np.nan for n in names]
        cis = [results[n].ci95(metric) if metric in results[n].values else 0 for n in names]
        ax.bar(range(len(names)), means, yerr=cis, color=colors, capsize=3)
        ax.set_xticks(range(len(names)), [titles[n].split(" (")[0] for n in names], rotation=45, ha="right", fontsize=7)
        ax.set_title(metric.replace("_", " "))
        if metric == "fid":
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
