"""Checkpoint selection on the validation split: score the weights a training kept, pick one, flag overfitting.

A training run with ``LoopConfig.keep_weights_every`` keeps ``weights/step_<N>.safetensors`` (the EMA weights
when the recipe has an EMA: what the pipeline would have saved at that step). :func:`select_checkpoint` loads each
into the pipeline, scores it with :func:`~express4d_hf.evaluation.scoring.score_pipeline` (the one
pipeline->protocol adapter: same sampler, same per-clip seeds as the test rows) on the validation clips
(:func:`validation_clips`: the project's validation split, held out of train by
:func:`~express4d_hf.data.splits.split_validation`, never test clips), chooses a step with
:func:`choose_checkpoint`, and leaves the chosen weights loaded.

The criterion (:data:`CRITERION`): the highest mean validation R-Precision top-3 wins, except that every step
whose mean R@3 lies within the best step's 95% interval counts as tied with it, and among those the lowest
validation FID wins (then the later step). Why: R@3 is the table's text-faithfulness column and what the
evaluator itself is selected on; with a few replications on ~128 clips, R@3 differences inside the interval are
sampling noise, and FID (realism of the motion distribution) is the next thing the table ranks on, so it breaks
those ties instead of noise. Overfitting is flagged when the last step's mean R@3 falls below that interval.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.constants import EVAL_GROUP_SIZE
from ..core.io import atomic_path, atomic_write_text
from ..core.motion import FaceMotion
from .protocol import EvaluationResult, MotionTextEvaluator, evaluator_fingerprint
from .scoring import Sampling, score_pipeline, test_subset

logger = logging.getLogger(__name__)

__all__ = ["CRITERION", "choose_checkpoint", "keep_selected", "load_weights", "plot_validation", "saved_weights",
           "select_checkpoint", "validation_clips"]  # fmt: skip

METRIC, TIEBREAK = "r_precision_top3", "fid"
CRITERION = ("highest mean validation R-Precision top-3; steps within the best step's 95% interval of it count as "
             "tied and the lowest validation FID among them wins (then the later step)")  # fmt: skip
WEIGHTS_DIR = "weights"  # where training.common.save_weights writes (evaluation does not import training)
CURVE_METRICS = ("r_precision_top1", "r_precision_top3", "fid", "mm_dist", "diversity")


def saved_weights(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the weights a training kept in ``folder/weights/`` (``LoopConfig.keep_weights_every``)."""
    found = []
    for path in (Path(folder) / WEIGHTS_DIR).glob("step_*.safetensors"):
        step = path.stem.split("_", 1)[1]
        if step.isdigit():
            found.append((int(step), path))
    return sorted(found)


def _component(pipe: Any):
    """The trained network of a pipeline: MDM's denoiser or T2M-GPT's transformer (the VQ-VAE is fixed)."""
    for name in ("denoiser", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    raise TypeError(f"{type(pipe).__name__} has neither a denoiser nor a transformer to load weights into")


def load_weights(pipe: Any, path: str | Path) -> None:
    """Copy the kept weights at ``path`` into ``pipe``'s network in place (its device and dtype stay, so a bf16
    denoiser's recorded CUDA graphs stay valid)."""
    import torch
    from safetensors.torch import load_file

    module = _component(pipe)
    state = load_file(str(path))
    with torch.no_grad():
        missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path}: weights do not match {type(module).__name__} (missing {missing[:5]}, unexpected {unexpected[:5]})")


def validation_clips(splits, fraction: float, seed: int, max_clips: int | None = None,
                     group_size: int = EVAL_GROUP_SIZE) -> list[FaceMotion]:  # fmt: skip
    """The validation clips selection scores: ``split_validation(len(train), fraction, seed)`` of the train split (the
    evaluator's own held-out clips when ``fraction`` and ``seed`` are its ``val_fraction`` and ``seed``), in whole
    groups of ``group_size``. Each clip's ``metadata["id"]`` names its take."""
    from ..data.splits import clips_from_split, hold_out_validation

    held = hold_out_validation(splits, fraction, seed)
    return test_subset(clips_from_split(held["validation"]), max_clips, group_size)


def _summary(result: EvaluationResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in CURVE_METRICS:
        if metric in result.values:
            out[metric], out[f"{metric}_ci95"] = result.mean(metric), result.ci95(metric)
    return out


def choose_checkpoint(scores: dict[int, EvaluationResult]) -> dict[str, Any]:
    """Apply :data:`CRITERION` to each step's validation result: ``selected_step``, ``best_step`` (highest mean
    R@3), ``last_step``, ``tied_steps`` (within the best's interval) and ``overfit`` (the last step's mean R@3
    below the best's interval).

    >>> r = lambda r3, fid: EvaluationResult({"r_precision_top3": r3, "fid": fid}, [0, 1])
    >>> c = choose_checkpoint({10: r([0.5, 0.5], [3, 3]), 20: r([0.70, 0.74], [5, 5]), 30: r([0.71, 0.71], [4, 4])})
    >>> c["best_step"], c["selected_step"], c["tied_steps"], c["overfit"]
    (20, 30, [20, 30], False)
    """
    if not scores:
        raise ValueError("no checkpoint to choose from")
    steps = sorted(scores)
    means = {s: scores[s].mean(METRIC) for s in steps}
    best = max(steps, key=lambda s: (means[s], s))
    floor = means[best] - scores[best].ci95(METRIC)
    tied = [s for s in steps if means[s] >= floor]
    selected = min(tied, key=lambda s: (scores[s].mean(TIEBREAK), -s))
    last = steps[-1]
    return {"selected_step": selected, "best_step": best, "last_step": last, "tied_steps": tied,
            "overfit": bool(means[last] < floor), "interval_floor": floor}  # fmt: skip


def _cache_key(key: dict[str, Any], path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    blob = json.dumps({**key, "weights": digest.hexdigest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select_checkpoint(
    pipe: Any,
    folder: str | Path,
    evaluator: MotionTextEvaluator,
    clips: Sequence[FaceMotion],
    sampling: Sampling | None = None,
    replications: int = 3,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every weight file kept in ``folder`` on the validation ``clips`` and load the chosen one into ``pipe``.

    Returns the JSON record of the selection (criterion, the validation curve, the chosen step, the overfitting
    flag, the clip ids it used). ``cache_dir``: each step's result is kept there and reused when the weights, the
    clips, the evaluator and the settings are the same (a resumed benchmark does not score twice).
    """
    kept = saved_weights(folder)
    if not kept:
        raise FileNotFoundError(f"{folder}: no weights/step_*.safetensors to select from (train with "
                                "keep_weights_every > 0, as `express4d benchmark --select-checkpoints` does)")  # fmt: skip
    ids = [str(c.metadata.get("id", i)) for i, c in enumerate(clips)]
    base_key = {"clips": ids, "replications": replications, "seed": seed, "evaluator": evaluator_fingerprint(evaluator),
                "sampling": (sampling or Sampling()).describe()}  # fmt: skip
    scores: dict[int, EvaluationResult] = {}
    for step, path in kept:
        cached = Path(cache_dir) / f"step_{step}.json" if cache_dir is not None else None
        key = _cache_key(base_key, path)
        if cached is not None and cached.exists():
            saved = json.loads(cached.read_text())
            if saved.get("key") == key:
                scores[step] = EvaluationResult.from_dict(saved["result"])
                continue
        load_weights(pipe, path)
        scores[step] = score_pipeline(pipe, evaluator, clips, sampling, replications=replications, seed=seed, progress=progress)
        logger.info("[selection] %s step %d: validation R@3 %.3f ± %.3f, FID %.3f", Path(folder).name, step,
                    scores[step].mean(METRIC), scores[step].ci95(METRIC), scores[step].mean(TIEBREAK))  # fmt: skip
        if cached is not None:
            atomic_write_text(cached, json.dumps({"key": key, "step": step, "result": scores[step].to_dict()}, indent=2) + "\n")
    choice = choose_checkpoint(scores)
    load_weights(pipe, dict(kept)[choice["selected_step"]])
    last, best = scores[choice["last_step"]], scores[choice["best_step"]]
    note = (f"validation R@3 fell: the last step's {last.mean(METRIC):.3f} is below the best step's "
            f"{best.mean(METRIC):.3f} ± {best.ci95(METRIC):.3f} (step {choice['best_step']}): the schedule overfits"
            if choice["overfit"] else "no overfitting seen: the last step's validation R@3 is within the best's interval")  # fmt: skip
    return {
        "criterion": CRITERION, "metric": METRIC, "tiebreak": TIEBREAK, **choice, "note": note,
        "steps": [s for s, _ in kept], "replications": replications, "seed": seed,
        "sampling": next(iter(scores.values())).info.get("sampling", {}),
        "validation": {"clips": len(ids), "clip_ids": ids},
        "curve": [{"step": s, **_summary(scores[s])} for s in sorted(scores)],
    }  # fmt: skip


def keep_selected(folder: str | Path, record: dict[str, Any]) -> Path:
    """Make the pipeline folder hold the selected weights (what "keep the best" means): the network's safetensors
    file (``denoiser/`` or ``transformer/``) is replaced, atomically, by the kept weights of the selected step, and
    ``selection.json`` says so. Every step's weights stay in ``weights/`` (the trainer's own output is the last
    one's), so choosing again (another evaluator, more replications) can only ever land on a kept step.
    Returns the replaced file."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    step = record["selected_step"]
    target = None
    for component in ("denoiser", "transformer"):
        found = sorted((folder / component).glob("*.safetensors"))
        if len(found) == 1:
            target = found[0]
            break
    if target is None:
        raise FileNotFoundError(f"{folder}: no denoiser/ or transformer/ safetensors file to keep the selected weights in")
    summary = {k: record[k] for k in ("selected_step", "last_step", "best_step", "steps", "criterion", "overfit", "note")}
    state = load_file(str(dict(saved_weights(folder))[step]))
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "step": str(step), "selected_on": "validation"})
    atomic_write_text(folder / "selection.json", json.dumps({**summary, "weights_file": str(target.relative_to(folder)),
                      "holds": f"the weights of step {step}"}, indent=2) + "\n")  # fmt: skip
    return target


def plot_validation(records: dict[str, dict[str, Any]], path: str | Path, titles: dict[str, str] | None = None) -> None:
    """``validation.png``: per model, validation R@3 (95% interval bars) and FID against the training step, the
    selected step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(records)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], names):
        record = records[name]
        curve = record["curve"]
        steps = [p["step"] for p in curve]
        ax.errorbar(steps, [p[METRIC] for p in curve], yerr=[p[f"{METRIC}_ci95"] for p in curve], color="tab:blue",
                    marker="o", capsize=3, label="R@3")  # fmt: skip
        ax.set_xlabel("training step")
        ax.set_ylabel("validation R@3", color="tab:blue")
        twin = ax.twinx()
        twin.plot(steps, [p[TIEBREAK] for p in curve], color="tab:red", marker="s", linestyle="--", label="FID")
        twin.set_ylabel("validation FID", color="tab:red")
        for axis in (ax, twin):
            axis.ticklabel_format(axis="y", useOffset=False)
        ax.axvline(record["selected_step"], color="k", alpha=0.4, linestyle=":")
        flag = " (overfits)" if record["overfit"] else ""
        ax.set_title(f"{(titles or {}).get(name, name)}: step {record['selected_step']}{flag}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
