"""Load any Express4D pipeline folder without knowing its class, and render the model cards they ship.

``load_pipeline(folder)`` reads ``model_index.json``'s ``_class_name`` and calls that class's
``from_pretrained``. Classes are registered by dotted path in :data:`PIPELINE_CLASSES` and imported only
when needed, so adding a pipeline is one line and loading one does not import the others. Importing the
pipeline module also imports its custom components (denoiser, normalizer, ...), which diffusers requires:
it resolves a component saved from a non-diffusers module only through ``sys.modules``.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from string import Template
from typing import Any

from ..core.constants import HUB_CARDS_DIR
from ..core.io import atomic_write_text

# model_index.json `_class_name` -> "module:Class" (add new pipelines here).
PIPELINE_CLASSES: dict[str, str] = {
    "Express4DMDMPipeline": "express4d_hf.pipelines.mdm:Express4DMDMPipeline",
    "Express4DT2MGPTPipeline": "express4d_hf.pipelines.t2m_gpt:Express4DT2MGPTPipeline",
}



class PipelineLoadError(FileNotFoundError):
    """A folder that is not a loadable Express4D pipeline; the message names the file and the fix."""


def pipeline_class_name(folder: str | os.PathLike) -> str:
    """``_class_name`` of the pipeline saved in ``folder`` (a local folder or a Hub repository id)."""
    index = _model_index_path(folder)
    try:
        data = json.loads(Path(index).read_text())
    except json.JSONDecodeError as err:
        raise PipelineLoadError(f"{index}: not valid JSON ({err}); re-save the pipeline with save_pretrained") from err
    name = data.get("_class_name")
    if not isinstance(name, str):
        raise PipelineLoadError(f"{index}: no `_class_name` field; this is not a diffusers pipeline folder")
    return name


def resolve_pipeline_class(class_name: str) -> type:
    """The pipeline class registered under ``class_name`` (imports its module on first use)."""
    if class_name not in PIPELINE_CLASSES:
        raise PipelineLoadError(
            f"unknown pipeline class {class_name!r}; express4d-hf knows {sorted(PIPELINE_CLASSES)} "
            "(register new ones in express4d_hf.pipelines.loading.PIPELINE_CLASSES)"
        )
    module_name, attr = PIPELINE_CLASSES[class_name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def load_pipeline(folder: str | os.PathLike, **kwargs: Any):
    """Load the Express4D pipeline saved in ``folder`` (keyword arguments go to ``from_pretrained``, e.g. ``dtype``).

    ``folder`` is a local folder written by ``save_pretrained`` / ``express4d train``, or a Hub repository
    id (resolved through the local cache; honours ``HF_HUB_OFFLINE``).
    """
    cls = resolve_pipeline_class(pipeline_class_name(folder))
    return cls.from_pretrained(str(folder), **kwargs)


def _model_index_path(folder: str | os.PathLike) -> str:
    path = Path(folder)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise PipelineLoadError(
                f"{path}: no model_index.json; pass the folder written by `express4d train ... --out` "
                "or by pipeline.save_pretrained()"
            )
        return str(index)
    if path.exists():
        raise PipelineLoadError(f"{path}: is a file; pass the pipeline folder that holds model_index.json")
    looks_like_repo = isinstance(folder, str) and folder.count("/") == 1 and not folder.startswith((".", "/"))
    if not looks_like_repo:
        raise PipelineLoadError(f"{folder}: no such pipeline folder")
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(folder, "model_index.json")
    except Exception as err:  # offline, missing repo, gated...: one clear message
        raise PipelineLoadError(f"{folder}: not a local folder and not loadable from the Hub ({err})") from err


# --- model cards ------------------------------------------------------------------------------------
def render_model_card(template_name: str, fields: dict[str, Any]) -> str:
    """Fill ``express4d_hf/hub_cards/<template_name>`` (``$field`` placeholders; unknown ones stay as written)."""
    path = HUB_CARDS_DIR / template_name
    if not path.is_file():
        raise FileNotFoundError(f"model card template {path} is missing: reinstall express4d-hf")
    return Template(path.read_text(encoding="utf-8")).safe_substitute({k: str(v) for k, v in fields.items()})


def write_model_card(folder: str | os.PathLike, template_name: str, fields: dict[str, Any]) -> Path:
    """Render a card into ``folder/README.md`` (atomically) and return its path."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, render_model_card(template_name, fields))
    return path
