# Copyright 2025 The express4d-hf authors. Apache-2.0.
"""Express4D text-to-facial-motion metrics as an ``evaluate`` module.

A thin wrapper over ``express4d_hf.evaluation``: R-Precision top-1/2/3, FID, MM-Dist, Diversity and
Multimodality in the embedding space of a text-motion evaluator. Never put two modules in one
``import`` statement (``import datasets, evaluate``): ``evaluate.load`` reads imports line by line
to check dependencies and would see only the first.
"""

import os
import warnings
from collections import OrderedDict

import datasets
import evaluate
import numpy as np

from express4d_hf.core.constants import EVAL_GROUP_SIZE, TRAIN_FPS
from express4d_hf.evaluation.metrics import embedding_metrics, gaussian_stats, multimodality
from express4d_hf.evaluation.protocol import evaluator_fingerprint
from express4d_hf.livelink import FaceMotion

_CITATION = """\
@misc{aloni2025express4d,
  title={Express4D: Expressive, Friendly, and Extensible 4D Facial Motion Generation Benchmark},
  author={Yaron Aloni and Rotem Shalev-Arkushin and Yonatan Shafir and Guy Tevet and Ohad Fried and Amit Haim Bermano},
  year={2025},
  eprint={2508.12438},
  archivePrefix={arXiv},
  primaryClass={cs.GR},
  url={https://arxiv.org/abs/2508.12438}
}
@inproceedings{guo2022generating,
  title={Generating Diverse and Natural 3D Human Motions From Text},
  author={Guo, Chuan and Zou, Shihao and Zuo, Xinxin and Wang, Sen and Ji, Wei and Li, Xingyu and Cheng, Li},
  booktitle={CVPR},
  year={2022}
}
"""

_DESCRIPTION = """\
Text-to-facial-motion metrics of the Express4D benchmark (ARKit blendshape motion, 61 channels),
computed in the shared embedding space of a learned text-motion evaluator: R-Precision top-1/2/3
(retrieval of each text's motion among groups of 32), FID (Frechet distance to real motion
embeddings), MM-Dist (mean text-motion distance), Diversity and Multimodality. This is one
evaluation pass; the benchmark protocol averages 20 replications
(`express4d_hf.evaluation.evaluate_generator`).
"""

_KWARGS_DESCRIPTION = """
Config "default" (motions in, evaluator applied here):
    predictions: list of generated motions, each an `express4d_hf.FaceMotion` (any fps) or a
        [frames, 61] float array at `fps` frames per second (ARKit channels in Live Link order).
    references: list of captions (str), one per prediction. When a caption repeats, its first
        generation counts for R-Precision/FID/MM-Dist/Diversity and all its generations for
        Multimodality.
    evaluator: path to a saved `express4d_hf.models.evaluator.TextMotionEvaluator` folder, or an
        object with `embed_texts(list[str])` and `embed_motions(list[FaceMotion])`.
    fps: frame rate of array predictions (default 20); FaceMotion carries its own.
    real_motions: optional real test motions (FaceMotion or arrays at `fps`) for the FID
        reference; otherwise `evaluator.real_stats`; otherwise no FID (with a warning).
    group_size (32), top_k (3), diversity_pairs (min(300, N-1)), seed (0), mm_pairs (None: all pairs).
Config "embeddings" (evaluator already applied):
    predictions: generated motion embeddings, [N, D].
    references: text embeddings of the matching captions, [N, D].
    real_embeddings: optional real motion embeddings [M, D] for FID (no FID without them).
    mm_embeddings: optional [P, G, D] embeddings of G >= 2 generations of P prompts for Multimodality.
    group_size, top_k, diversity_pairs, seed, mm_pairs as above.
Returns:
    r_precision_top1, r_precision_top2, r_precision_top3: in [0, 1], higher is better (chance k/32).
    fid: >= 0, lower is better (present with a real reference).
    mm_dist: >= 0, lower is better.
    diversity: >= 0, closer to the real data's value is better.
    multimodality: >= 0, higher is more varied (present when captions repeat / mm_embeddings given).
    evaluator: (default config) the fingerprint of the evaluator that scored, "sha256:..." of its weights and config.
Examples:
    >>> import numpy as np
    >>> import evaluate
    >>> metric = evaluate.load("metrics/express4d", "embeddings")  # or evaluate.load("<user>/express4d", "embeddings")
    >>> text = np.random.default_rng(0).normal(size=(64, 16))
    >>> out = metric.compute(predictions=text, references=text, real_embeddings=text)
    >>> out["r_precision_top1"], round(out["fid"], 6)
    (1.0, 0.0)
"""

CONFIGS = ("default", "embeddings")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Express4D(evaluate.Metric):
    """R-Precision, FID, MM-Dist, Diversity and Multimodality for text-to-facial-motion generation."""

    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"unknown config {self.config_name!r}; use one of {list(CONFIGS)}")
        if self.config_name == "embeddings":
            features = datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")),
                 "references": datasets.Sequence(datasets.Value("float32"))}
            )  # fmt: skip
        else:
            # Motions travel through Arrow as variable-length [frames, 61] float32 arrays at 20 fps;
            # FaceMotion inputs are converted (and resampled) in compute/add_batch/add below. evaluate's
            # "numpy" output format only allows Value features, so _compute gets nested lists back
            # and converts them (about 5 ms per 196-frame motion).
            features = datasets.Features(
                {"predictions": datasets.Array2D(shape=(None, 61), dtype="float32"),
                 "references": datasets.Value("string")}
            )  # fmt: skip
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            reference_urls=["https://arxiv.org/abs/2508.12438", "https://jaron1990.github.io/Express4D/"],
        )

    # -- FaceMotion support for the default config -----------------------------------------------------------
    def _motions_to_arrays(self, predictions, fps):
        """FaceMotion or [T, 61] arrays at ``fps`` -> float32 arrays at 20 fps (what Arrow stores)."""
        if self.config_name != "default" or predictions is None:
            return predictions
        arrays = []
        for i, motion in enumerate(predictions):
            if not isinstance(motion, FaceMotion):
                try:
                    motion = FaceMotion(np.asarray(motion, dtype=np.float32), fps=fps)
                except ValueError as err:
                    raise ValueError(f"prediction {i}: {err}") from None
            arrays.append(motion.resample(TRAIN_FPS).values)
        return arrays

    def compute(self, *, predictions=None, references=None, fps=TRAIN_FPS, **kwargs):
        """Compute the metrics; FaceMotion predictions are accepted and arrays are read at ``fps``."""
        if self.config_name == "default":
            kwargs["fps"] = fps  # _compute reads it for real_motions given as arrays
        return super().compute(predictions=self._motions_to_arrays(predictions, fps), references=references, **kwargs)

    def add_batch(self, *, predictions=None, references=None, fps=TRAIN_FPS, **kwargs):
        """Add a batch; FaceMotion predictions are accepted and arrays are read at ``fps``."""
        return super().add_batch(predictions=self._motions_to_arrays(predictions, fps), references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, fps=TRAIN_FPS, **kwargs):
        """Add one prediction; a FaceMotion is accepted and an array is read at ``fps``."""
        if prediction is not None and self.config_name == "default":
            prediction = self._motions_to_arrays([prediction], fps)[0]
        return super().add(prediction=prediction, reference=reference, **kwargs)

    # -- computation ------------------------------------------------------------------------------------------
    def _compute(self, predictions, references, **kwargs):
        if self.config_name == "embeddings":
            return self._compute_embeddings(predictions, references, **kwargs)
        return self._compute_motions(predictions, references, **kwargs)

    def _compute_embeddings(
        self, predictions, references, real_embeddings=None, mm_embeddings=None, group_size=EVAL_GROUP_SIZE,
        top_k=3, diversity_pairs=None, seed=0, mm_pairs=None,
    ):  # fmt: skip
        motion_emb = _stack(predictions, "predictions")
        text_emb = _stack(references, "references")
        real_stats = None
        if real_embeddings is not None:
            real_stats = gaussian_stats(np.asarray(real_embeddings, dtype=np.float64))
        else:
            warnings.warn("express4d: no real_embeddings given, so no FID", stacklevel=2)
        result = embedding_metrics(
            text_emb, motion_emb, real_stats, group_size=group_size, top_k=top_k,
            diversity_pairs=diversity_pairs, seed=seed,
        )  # fmt: skip
        if mm_embeddings is not None:
            result["multimodality"] = multimodality(mm_embeddings, mm_pairs, seed)
        return _ordered(result)

    def _compute_motions(
        self, predictions, references, evaluator=None, real_motions=None, fps=TRAIN_FPS, group_size=EVAL_GROUP_SIZE,
        top_k=3, diversity_pairs=None, seed=0, mm_pairs=None,
    ):  # fmt: skip
        evaluator = self._resolve_evaluator(evaluator)
        captions = [str(c) for c in references]
        motions = [FaceMotion(np.asarray(p, dtype=np.float32).reshape(-1, 61), fps=TRAIN_FPS, caption=c)
                   for p, c in zip(predictions, captions)]  # fmt: skip
        motion_emb = _embeddings(evaluator.embed_motions(motions), len(motions), "embed_motions")

        first_of = OrderedDict()  # caption -> indices of its generations, in input order
        for i, caption in enumerate(captions):
            first_of.setdefault(caption, []).append(i)
        unique = [indices[0] for indices in first_of.values()]
        text_emb = _embeddings(evaluator.embed_texts(list(first_of)), len(unique), "embed_texts")

        real_stats = None
        if real_motions is not None:
            real = self._motions_to_arrays(list(real_motions), fps)
            real = [FaceMotion(r, fps=TRAIN_FPS) for r in real]
            real_stats = gaussian_stats(_embeddings(evaluator.embed_motions(real), len(real), "embed_motions"))
        elif getattr(evaluator, "real_stats", None) is not None:
            mu, sigma = evaluator.real_stats
            real_stats = (np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
        else:
            warnings.warn(
                "express4d: no real_motions given and the evaluator has no real_stats, so no FID", stacklevel=2
            )

        result = embedding_metrics(
            text_emb, motion_emb[unique], real_stats, group_size=group_size, top_k=top_k,
            diversity_pairs=diversity_pairs, seed=seed,
        )  # fmt: skip
        repeated = [indices for indices in first_of.values() if len(indices) >= 2]
        if repeated:
            per_prompt = min(len(indices) for indices in repeated)  # equal count per prompt: the first ones
            stacked = np.stack([motion_emb[indices[:per_prompt]] for indices in repeated])
            result["multimodality"] = multimodality(stacked, mm_pairs, seed)
        # scores name the evaluator that made them: a hash of its weights and config
        return {**_ordered(result), "evaluator": evaluator_fingerprint(evaluator)}

    def _resolve_evaluator(self, evaluator):
        if evaluator is None:
            raise ValueError(
                "express4d (default config) needs evaluator=<path to a saved TextMotionEvaluator> or an object with "
                "embed_texts/embed_motions; use the 'embeddings' config to pass precomputed embeddings instead"
            )
        if hasattr(evaluator, "embed_texts") and hasattr(evaluator, "embed_motions"):
            return evaluator
        if not isinstance(evaluator, (str, os.PathLike)):
            raise TypeError(f"evaluator must be a path or an evaluator object, got {type(evaluator).__name__}")
        cache = self.__dict__.setdefault("_evaluator_cache", {})
        key = os.fspath(evaluator)
        if key not in cache:
            from express4d_hf.models.evaluator import TextMotionEvaluator  # lazy: torch is needed only here

            cache[key] = TextMotionEvaluator.from_pretrained(key)
        return cache[key]


def _stack(rows, name):
    try:
        array = np.asarray(np.stack(list(rows)) if len(rows) else rows, dtype=np.float64)
    except ValueError:
        raise ValueError(f"{name}: every embedding must have the same dimension") from None
    if array.ndim != 2:
        raise ValueError(f"{name} must be embeddings [N, D], got shape {array.shape}")
    return array


def _embeddings(emb, count, method):
    array = np.asarray(emb.detach().cpu().numpy() if hasattr(emb, "detach") else emb, dtype=np.float64)
    if array.ndim != 2 or len(array) != count:
        raise ValueError(f"evaluator.{method} returned shape {array.shape} for {count} inputs; expected [N, D]")
    return array


def _ordered(result):
    order = [k for k in result if k.startswith("r_precision")] + ["fid", "mm_dist", "diversity", "multimodality"]
    return {k: float(result[k]) for k in order if k in result}
