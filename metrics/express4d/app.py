"""Gradio widget of the Express4D metric, for its Hugging Face Space (``python app.py`` locally).

It serves the "embeddings" config: paste one JSON list of floats per row for the motion
embeddings (predictions) and the text embeddings (references), at least 32 rows. The widget is
``evaluate``'s own ``launch_gradio_widget``, which uses the Gradio 3 ``gr.inputs`` API: the card
pins ``sdk_version: 3.19.1`` for the Space; locally, run it in an environment with ``gradio<4``.
"""

from pathlib import Path

import evaluate
import gradio
from evaluate.utils import launch_gradio_widget

if not hasattr(gradio, "inputs"):
    raise SystemExit(
        f"evaluate's launch_gradio_widget needs gradio<4 (found {gradio.__version__}); "
        "pip install 'gradio<4' in a separate environment, or call the metric from Python instead"
    )

module = evaluate.load(str(Path(__file__).resolve().parent), "embeddings")
launch_gradio_widget(module)
