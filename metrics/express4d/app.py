"""Gradio app of the Express4D metric, for its Hugging Face Space (``python app.py`` locally; Gradio 6).

It serves the "embeddings" config: one JSON object with ``predictions`` (motion embeddings) and
``references`` (text embeddings), one list of floats per row and at least 32 rows, plus optional
``real_embeddings`` (for FID) and ``group_size``. ``evaluate``'s own ``launch_gradio_widget`` is built on the
Gradio 3 ``gr.inputs`` API, gone since Gradio 4, so this page is written with ``gr.Blocks``.
"""

from __future__ import annotations

import json
from pathlib import Path

import evaluate
import gradio as gr
import numpy as np

HERE = Path(__file__).resolve().parent
OPTIONAL_FIELDS = ("real_embeddings", "mm_embeddings", "group_size")


def example_payload(rows: int = 64, dim: int = 16, seed: int = 0) -> str:
    """A JSON payload of random embeddings: motions and real clips scattered around their texts."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(rows, dim))
    motion = text + 0.5 * rng.normal(size=text.shape)
    real = text + 0.5 * rng.normal(size=text.shape)
    return json.dumps({"predictions": motion.round(4).tolist(), "references": text.round(4).tolist(),
                       "real_embeddings": real.round(4).tolist()})  # fmt: skip


def score(payload: str, module) -> dict:
    """Scores of one JSON payload; a :class:`gradio.Error` that says what to fix on bad input."""
    try:
        data = json.loads(payload or "")
    except json.JSONDecodeError as err:
        raise gr.Error(f"the input is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    if not isinstance(data, dict) or not {"predictions", "references"} <= set(data):
        raise gr.Error('expected a JSON object {"predictions": [[...], ...], "references": [[...], ...]} '
                       "(motion and text embeddings, one list of floats per row)")  # fmt: skip
    unknown = set(data) - {"predictions", "references", *OPTIONAL_FIELDS}
    if unknown:
        raise gr.Error(f"unknown field(s) {sorted(unknown)}; optional fields are {list(OPTIONAL_FIELDS)}")
    kwargs = {name: data[name] for name in OPTIONAL_FIELDS if name in data}
    try:
        return module.compute(predictions=data["predictions"], references=data["references"], **kwargs)
    except (ValueError, TypeError) as err:
        raise gr.Error(str(err)) from err


def build_demo(module=None) -> gr.Blocks:
    """The page: paste or upload a payload, score it, read the scores as JSON."""
    module = module or evaluate.load(str(HERE), "embeddings")
    with gr.Blocks(title="Express4D metric") as demo:
        gr.Markdown(
            "# Express4D metric\n"
            "R-Precision (top 1/2/3, groups of 32), FID, MM-Dist and Diversity in the embedding space of the "
            "Express4D text-motion evaluator. Paste `{\"predictions\": ..., \"references\": ...}` (motion and text "
            "embeddings, at least 32 rows; add `real_embeddings` for FID) or upload a `.json` file. Scoring motions "
            "themselves needs the evaluator: `evaluate.load(\"express4d\")` in Python (see the card)."
        )
        payload = gr.Code(language="json", label="embeddings (JSON)", lines=12)
        with gr.Row():
            upload = gr.UploadButton("Upload .json", file_types=[".json"])
            example = gr.Button("Load an example")
            run = gr.Button("Score", variant="primary")
        scores = gr.JSON(label="scores")
        upload.upload(lambda file: Path(file).read_text(encoding="utf-8"), upload, payload)
        example.click(example_payload, None, payload)
        run.click(lambda text: score(text, module), payload, scores, api_name="score")
    return demo


if __name__ == "__main__":
    build_demo().launch()
