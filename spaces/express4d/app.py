"""Hugging Face Space entry point: the Express4D app of ``express4d_hf.apps.space``, configured from the Space's variables.

The app itself lives in the package so that ``express4d demo`` runs exactly the same thing locally.
Space variables: EXPRESS4D_MODELS (comma-separated Hub repo ids or folders of trained pipelines),
EXPRESS4D_DATA (dataset for Browse), EXPRESS4D_CONTRIBUTIONS_REPO + the HF_TOKEN secret (contributions
become pull requests to that dataset repo). See README.md.
"""

import sys
from pathlib import Path

try:
    import express4d_hf  # noqa: F401  (installed, or uploaded next to this file)
except ImportError:  # a checkout without `pip install -e .`: use the package two folders up
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from express4d_hf.apps.space import build_app

app = build_app()
demo = app.blocks

if __name__ == "__main__":
    app.launch(server_name="0.0.0.0")
