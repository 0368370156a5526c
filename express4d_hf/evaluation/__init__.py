"""Evaluation: metric math over evaluator embeddings (``metrics``) and the replication protocol (``protocol``).

``metrics`` is numpy/scipy only; ``protocol`` drives a generator and a text-motion evaluator (any
object with ``embed_texts`` and ``embed_motions``, see :class:`MotionTextEvaluator`) through the
Express4D protocol. The ``evaluate`` module in ``metrics/express4d/`` wraps both.
"""

from .metrics import (
    FrechetDistanceError,
    diversity,
    embedding_metrics,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    matching_score,
    multimodality,
    r_precision,
)
from .protocol import (
    EvaluationResult,
    GeneratorOutputError,
    MotionTextEvaluator,
    evaluate_generator,
    evaluate_real,
    format_results_table,
    noise_generator,
    text_blind_generator,
)

__all__ = [
    "EvaluationResult",
    "FrechetDistanceError",
    "GeneratorOutputError",
    "MotionTextEvaluator",
    "diversity",
    "embedding_metrics",
    "evaluate_generator",
    "evaluate_real",
    "format_results_table",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_stats",
    "matching_score",
    "multimodality",
    "noise_generator",
    "r_precision",
    "text_blind_generator",
]
