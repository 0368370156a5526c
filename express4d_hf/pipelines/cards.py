"""The model cards the pipelines write and push: front matter (licence, ``datasets:``, ``model-index``) and
the licence story, from the structured fields the trainers put in ``pipe.card_data``.

``card_data`` keys read here (all optional; a pipeline saved without them gets a card that says so):

- ``dataset``: what the model was trained on, from :func:`training_data_card`:
  ``{"procedural": bool, "repo_id": str | None, "name": str, "fingerprint": str | None}``;
- ``scores``: the scores of a quick check or of the protocol, ``{"model": EvaluationResult.to_dict(),
  "text_blind": ..., "protocol": {"replications", "test_clips", "evaluator", "evaluator_fingerprint", ...}}``
  (what ``score_pipeline`` of the trainers returns).

One licence story for every model:

- trained on the **real Express4D captures** (or on data whose origin is not recorded): the weights derive
  from data released for non-commercial research only, so the card carries the dataset's terms:
  ``license: other``, ``license_name: express4d-research-only``, linked to the dataset (its Hub page when
  known, else the authors' page);
- trained on the **procedural stand-in corpus**: nothing of the real data is in the weights, so they carry
  the project's own licence, Apache-2.0.

Each card says which applies and why (``$licence_text`` in the templates).
"""

from __future__ import annotations

import os
import re
from typing import Any

PROJECT_LICENSE = "apache-2.0"
DATA_TERMS_URL = "https://jaron1990.github.io/Express4D/"
DATA_LICENSE_NAME = "express4d-research-only"
TASK_TYPE = "text-to-3d"
TASK_NAME = "Text to facial motion (Express4D)"
PROTOCOL_URL = "https://arxiv.org/abs/2508.12438"

#: metric key of ``EvaluationResult`` -> (model-index ``type``, display name); the order of the card.
CARD_METRICS: dict[str, tuple[str, str]] = {
    "r_precision_top1": ("r_precision_top1", "R-Precision top-1 (R@1)"),
    "r_precision_top2": ("r_precision_top2", "R-Precision top-2 (R@2)"),
    "r_precision_top3": ("r_precision_top3", "R-Precision top-3 (R@3)"),
    "fid": ("fid", "FID"),
    "mm_dist": ("mm_dist", "MM-Dist"),
    "diversity": ("diversity", "Diversity"),
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def training_data_card(data: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``card_data["dataset"]`` entry for a model trained on ``data`` (as the trainers take it).

    ``None`` is the procedural corpus. A folder or repo id is looked up in its build manifest (the
    ``procedural`` flag and fingerprint that ``express4d data build`` recorded); anything unreadable
    counts as real data, the safe side of the licence.
    """
    entry: dict[str, Any] = {"procedural": data is None, "repo_id": None, "name": "", "fingerprint": None}
    if data is not None and _REPO_ID.match(str(data)) and not os.path.exists(str(data)):
        entry["repo_id"] = str(data)
    try:
        from ..data.hub import dataset_manifest, manifest_is_procedural

        manifest = dataset_manifest(data, cache_dir)
        entry["procedural"] = manifest_is_procedural(manifest)
        entry["fingerprint"] = manifest.get("fingerprint")
        entry["name"] = manifest.get("pretty_name") or ""
    except (OSError, ValueError, KeyError) as err:  # keep what we know; the card says "not recorded"
        entry["name"] = entry["name"] or ("procedural corpus" if data is None else str(data))
        entry["error"] = f"{type(err).__name__}: {err}"
    if not entry["name"]:
        entry["name"] = "Express4D procedural stand-in" if entry["procedural"] else "Express4D"
    return entry


def evaluator_fingerprint(scores: dict[str, Any] | None) -> str | None:
    """The evaluator's fingerprint recorded with ``scores`` (protocol block, then the model's ``info``)."""
    if not scores:
        return None
    protocol = scores.get("protocol") or {}
    if protocol.get("evaluator_fingerprint"):
        return str(protocol["evaluator_fingerprint"])
    info = (scores.get("model") or {}).get("info") or {}  # EvaluationResult.info: "evaluator" is the fingerprint
    if info.get("evaluator"):
        return str(info["evaluator"])
    return None


def scores_from_results(results: dict[str, Any], row: str = "model") -> dict[str, Any]:
    """Card scores (the shape :func:`evaluator_fingerprint` and :func:`eval_results` read) from the
    ``results.json`` of ``express4d evaluate`` (or of the benchmark, naming its ``row``)."""
    rows = results.get("rows") or []
    found = [r for r in rows if r.get("model") == row]
    if not found:
        raise ValueError(f"no row {row!r} in the results (rows: {[r.get('model') for r in rows]})")
    model = found[0]
    meta = results.get("meta") or {}
    data = meta.get("data") or {}
    return {
        "model": model,
        "protocol": {
            "replications": model.get("replications"), "test_clips": data.get("test_clips_used"),
            "evaluator": (meta.get("config") or {}).get("evaluator_dir") or "see results.json",
            "evaluator_fingerprint": (model.get("info") or {}).get("evaluator"),
            "source": "express4d evaluate",
        },
    }  # fmt: skip


def licence_fields(dataset: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """``(front matter licence keys, the card's licence paragraph)`` for a model trained on ``dataset``."""
    if dataset and dataset.get("procedural"):
        text = (
            "**Licence: Apache-2.0, the project's own.** These weights were trained only on the **procedural "
            "stand-in corpus** of express4d-hf: synthetic clips generated by the project's code, in which no person "
            "was recorded and no Express4D capture appears. The real data's research-only terms therefore do not "
            "reach them, and they carry the licence of the code that made their training data. They are a "
            "demonstration of the tools, not a model of real faces; numbers measured with them are not Express4D results."
        )
        return {"license": PROJECT_LICENSE}, text
    link = f"https://huggingface.co/datasets/{dataset['repo_id']}" if dataset and dataset.get("repo_id") else DATA_TERMS_URL
    known = bool(dataset) and "error" not in dataset
    why = ("These weights were trained on the **Express4D captures**" if known else
           "The training data of these weights is not recorded, so they are treated as trained on the **Express4D "
           "captures**")  # fmt: skip
    text = (
        f"**Licence: `other` — the Express4D data terms ([{DATA_LICENSE_NAME}]({link})).** {why}, which their "
        "authors release for **non-commercial research use only**; weights derived from them carry the same terms "
        "(the code of express4d-hf itself is Apache-2.0, a licence that does not extend to the data or to these "
        "weights). **Do not create deep-fakes** or use generated performances to impersonate, identify, deceive or "
        "harm anyone, including the performers of the data set."
    )
    return {"license": "other", "license_name": DATA_LICENSE_NAME, "license_link": link}, text


def _dataset_type(dataset: dict[str, Any] | None) -> str:
    if dataset and dataset.get("repo_id"):
        return str(dataset["repo_id"])
    return "express4d-procedural" if dataset and dataset.get("procedural") else "express4d"


def eval_results(model_name: str, scores: dict[str, Any] | None, dataset: dict[str, Any] | None) -> list:
    """``huggingface_hub.EvalResult`` rows (one per metric) of ``scores["model"]`` for the ``model-index``."""
    from huggingface_hub import EvalResult

    metrics = ((scores or {}).get("model") or {}).get("metrics") or {}
    if not metrics:
        return []
    protocol = (scores or {}).get("protocol") or {}
    fingerprint = evaluator_fingerprint(scores)
    args = {
        "evaluator_fingerprint": fingerprint or "not recorded",
        "replications": protocol.get("replications", (scores or {}).get("model", {}).get("replications")),
        "test_clips": protocol.get("test_clips"),
        "data_fingerprint": (dataset or {}).get("fingerprint"),
    }
    args = {k: v for k, v in args.items() if v is not None}
    source = "express4d-hf protocol (mean of replications; 95% interval in metric_args)"
    rows = []
    for key, (metric_type, metric_name) in CARD_METRICS.items():
        entry = metrics.get(key)
        if not entry or entry.get("mean") is None:
            continue
        rows.append(EvalResult(
            task_type=TASK_TYPE, task_name=TASK_NAME,
            dataset_type=_dataset_type(dataset), dataset_name=(dataset or {}).get("name") or "Express4D",
            dataset_split="test", dataset_revision=(dataset or {}).get("fingerprint"),
            metric_type=metric_type, metric_name=metric_name, metric_value=round(float(entry["mean"]), 4),
            metric_args={**args, "ci95": round(float(entry.get("ci95") or 0.0), 4)},
            verified=False, source_name=source, source_url=PROTOCOL_URL,
        ))  # fmt: skip
    return rows


def front_matter(model_name: str, tags: list[str], card_data: dict[str, Any]) -> str:
    """The YAML between the ``---`` lines of a model card (validated by ``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import ModelCardData

    dataset = card_data.get("dataset")
    licence, _ = licence_fields(dataset)
    datasets = [dataset["repo_id"]] if dataset and dataset.get("repo_id") else None
    data = ModelCardData(
        library_name="diffusers", pipeline_tag=TASK_TYPE, tags=tags, datasets=datasets, model_name=model_name,
        eval_results=eval_results(model_name, card_data.get("scores"), dataset) or None, **licence,
    )  # fmt: skip
    return data.to_yaml()


def evaluation_fingerprint_line(card_data: dict[str, Any]) -> str:
    """One sentence naming the evaluator the card's numbers were measured with (empty without scores)."""
    scores = card_data.get("scores")
    if not scores:
        return ""
    fingerprint = evaluator_fingerprint(scores)
    where = ((scores.get("protocol") or {}).get("evaluator")) or "not recorded"
    if fingerprint:
        return (f"Measured with the evaluator of fingerprint `{fingerprint}` (folder `{where}`): numbers measured "
                "with another evaluator are not comparable; the `model-index` of this card records it too.")  # fmt: skip
    return (f"Measured with the evaluator in `{where}`; its fingerprint was not recorded, so compare these numbers "
            "only with numbers from that same evaluator folder.")  # fmt: skip


def common_card_fields(model_name: str, tags: list[str], card_data: dict[str, Any]) -> dict[str, Any]:
    """Template fields every pipeline card shares: ``front_matter``, ``licence_text``, ``dataset_line``,
    ``evaluator_line``."""
    dataset = card_data.get("dataset")
    _, licence_text = licence_fields(dataset)
    if dataset:
        kind = "procedural stand-in corpus (synthetic)" if dataset.get("procedural") else "Express4D captures"
        where = f" ([{dataset['repo_id']}](https://huggingface.co/datasets/{dataset['repo_id']}))" if dataset.get("repo_id") else ""
        fingerprint = f", data fingerprint `{dataset['fingerprint']}`" if dataset.get("fingerprint") else ""
        dataset_line = f"{dataset.get('name') or 'Express4D'}{where}: the {kind}{fingerprint}"
    else:
        dataset_line = "not recorded"
    return {
        "front_matter": front_matter(model_name, tags, card_data).rstrip("\n"),
        "licence_text": licence_text,
        "dataset_line": dataset_line,
        "evaluator_line": evaluation_fingerprint_line(card_data),
    }


__all__ = ["CARD_METRICS", "PROJECT_LICENSE", "common_card_fields", "eval_results", "evaluator_fingerprint",
           "front_matter", "licence_fields", "scores_from_results", "training_data_card"]  # fmt: skip
