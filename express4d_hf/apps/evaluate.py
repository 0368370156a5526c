"""``express4d evaluate``: score one model with the protocol, next to the Real row and the text-blind control.

The model is a pipeline folder (sampled exactly as the benchmark samples it, so the same seed and flags give
the benchmark's row to the last digit), or a folder of Live Link CSVs made anywhere else with a manifest that
names each file's caption, so that methods built outside this package are scored by the same evaluator on
the same test clips.

The manifest, ``manifest.json`` in the folder (or given by path)::

    [{"file": "take_001.csv", "caption": "A person is squinting briefly and then opening their eyes wide"}, ...]

``file`` is relative to the manifest's folder; captions repeat when several takes perform one caption.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.constants import EVAL_GROUP_SIZE
from ..core.motion import FaceMotion
from ..evaluation.scoring import Sampling

MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A ``--motions`` folder whose manifest or CSVs cannot be used; the message names the entry and the fix."""


@dataclass
class EvaluateConfig:
    """What one ``express4d evaluate`` run scores and how."""

    replications: int = 20  # protocol replications (the paper's 20)
    max_test_clips: int | None = None  # test subset in whole groups of 32 (None = the whole test split)
    seed: int = 0  # seeds the protocol (clip order, each clip's noise, diversity draws)
    multimodality: bool = False  # also compute Multimodality (pipelines only; extra generations)
    sampling: Sampling = field(default_factory=Sampling)  # how a diffusion pipeline samples
    control: bool = True  # add the Real row and the text-blind control


def read_motions_manifest(path: str | os.PathLike) -> list[FaceMotion]:
    """The captioned motions a ``--motions`` folder (or its ``manifest.json``) lists, read with the Live Link
    reader; every problem is reported at once, by entry."""
    from ..livelink import LiveLinkFormatError, read_livelink_csv

    path = Path(path)
    manifest = path / MANIFEST_NAME if path.is_dir() else path
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: no manifest; write a JSON list of {{\"file\": ..., \"caption\": ...}} there")
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"{manifest}: not valid UTF-8 JSON ({err})") from None
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{manifest}: expected a non-empty JSON list of {{\"file\": ..., \"caption\": ...}} objects")
    motions, problems = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not str(entry.get("caption") or "").strip():
            problems.append(f"entry {i}: needs a \"file\" and a non-empty \"caption\"")
            continue
        csv = manifest.parent / entry["file"]
        try:
            motion = read_livelink_csv(csv)
        except (OSError, LiveLinkFormatError) as err:
            problems.append(f"entry {i} ({entry['file']}): {err}")
            continue
        motions.append(motion.replace(caption=entry["caption"].strip(), metadata={**motion.metadata, "file": entry["file"]}))
    if problems:
        raise ManifestError(f"{manifest}: {len(problems)} unusable entr{'y' if len(problems) == 1 else 'ies'}:\n  "
                            + "\n  ".join(problems))  # fmt: skip
    return motions


def run_evaluation(
    out_dir: str | os.PathLike,
    evaluator_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    motions: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    config: EvaluateConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` (a pipeline folder) or ``motions`` (a folder of CSVs with a manifest) and write
    ``results.json``, ``results.md`` and ``metrics.png`` into ``out_dir``; return the results.json content."""
    from ..data.hub import dataset_fingerprint, load_express4d, resolve_dataset_dir
    from ..data.splits import clips_from_split
    from ..evaluation.protocol import EvaluationResult, evaluate_generator, evaluate_motions, evaluate_real
    from ..evaluation.protocol import text_blind_generator
    from ..evaluation.report import write_results
    from ..evaluation.scoring import score_pipeline, test_subset
    from ..models.evaluator import TextMotionEvaluator, describe_evaluator
    from ..training.common import run_metadata

    if (model is None) == (motions is None):
        raise ValueError("give exactly one of a model folder (--model) or a folder of motions (--motions)")
    config = config or EvaluateConfig()
    started = time.perf_counter()
    given = read_motions_manifest(motions) if motions is not None else None
    evaluator = TextMotionEvaluator.from_pretrained(evaluator_dir).eval()
    data_dir = resolve_dataset_dir(data, progress=progress)
    splits = load_express4d(data_dir, progress=progress)
    test_clips = clips_from_split(splits["test"])
    clips = test_subset(test_clips, config.max_test_clips, EVAL_GROUP_SIZE)
    protocol = dict(replications=config.replications, seed=config.seed, progress=progress)
    results: dict[str, EvaluationResult] = {}
    titles: dict[str, str] = {}
    if config.control:
        results["real"], titles["real"] = evaluate_real(clips, evaluator, **protocol), "Real (test clips)"
        blind = text_blind_generator(clips_from_split(splits["train"]), seed=config.seed)
        results["text_blind"] = evaluate_generator(blind, clips, evaluator, **protocol)
        titles["text_blind"] = "Text-blind control"
    if given is not None:
        results["motions"] = evaluate_motions(given, clips, evaluator, **protocol)
        titles["motions"] = f"{Path(motions).name} ({len(given)} motions)"
        described = {"motions": str(motions), "count": len(given)}
    else:
        import torch

        from ..pipelines.loading import load_pipeline

        pipe = load_pipeline(model).to("cuda" if torch.cuda.is_available() else "cpu")
        result = score_pipeline(pipe, evaluator, clips, config.sampling, multimodality=config.multimodality, **protocol)
        results["model"], titles["model"] = result, f"{type(pipe).__name__.removeprefix('Express4D').removesuffix('Pipeline')} ({Path(model).name})"
        described = {"model": str(model), "pipeline": type(pipe).__name__, "sampling": result.info.get("sampling")}
    meta = run_metadata(
        {**asdict(config), **described}, seeds={"evaluate": config.seed},
        data={"path": str(data_dir), "fingerprint": dataset_fingerprint(data_dir), "test_clips_used": len(clips),
              "test_clips_total": len(test_clips)},
        timings={"total_s": time.perf_counter() - started}, protocol=next(iter(results.values())).info,
        evaluator={"path": str(evaluator_dir), "class": type(evaluator).__name__,
                   "description": describe_evaluator(evaluator)},
    )  # fmt: skip
    notes = (
        f"Mean ± 95% interval (1.96·std/√R) over {config.replications} replications; {len(clips)} of {len(test_clips)} "
        f"test clips (whole groups of {EVAL_GROUP_SIZE}); R-Precision within groups of {EVAL_GROUP_SIZE}.\n\n"
        f"- evaluator: `{meta['protocol'].get('evaluator', 'unidentified')}` ({evaluator_dir}): "
        f"{meta['evaluator']['description']}\n"
        f"- scored: {json.dumps(described, default=str)}\n- hardware: {meta['hardware']}\n- date: {meta['created']}\n"
        f"- data fingerprint: `{meta['data']['fingerprint']}`\n- seed: {config.seed}\n"
    )
    return write_results(out_dir, results, titles, meta, "Express4D evaluation", notes)
