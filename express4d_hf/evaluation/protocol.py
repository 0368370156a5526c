"""The Express4D evaluation protocol: replications, reference rows and the results table.

:func:`evaluate_generator` runs the HumanML3D-style protocol the paper reports: for each of 20
replications, generate a motion for every test caption at its real clip's length, embed texts and
motions with the text-motion evaluator, and compute R-Precision top-1/2/3, MM-Dist, FID, Diversity
(and optionally Multimodality); report the mean over replications with a 95 % interval
``1.96 * std / sqrt(R)``. :func:`evaluate_real` gives the "Real" row, and
:func:`text_blind_generator` / :func:`noise_generator` give two reference generators that bracket
what a model's numbers mean.

What is fixed or pinned down relative to the official code (DESIGN.md, "Known defects"):

- Every random step is seeded from ``(seed, replication)``: the clip order (and so the groups of 32
  R-Precision ranks within), the diversity draws, and each clip's generation seed, which derives from
  ``(seed, replication, the clip's index in the test order)`` (:func:`clip_seeds`): a clip gets the same
  noise whatever the batch or chunk size, in the benchmark, ``express4d evaluate`` and a model card alike.
- Every result names the evaluator that scored it: :func:`evaluator_fingerprint` (weights and config).
- Generated motions are compared at exactly their real clip's length (the evaluator zeroes padding
  past each clip's length; defect 5). Longer outputs are cropped, shorter ones are an error.
- The Real row's FID compares two disjoint random halves of the real test set per replication
  instead of the set with itself (which is 0 by construction; defect 5).
- Multimodality works on any test-set size (defect 6).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from ..core.arkit import NUM_CHANNELS
from ..core.constants import EVAL_GROUP_SIZE, MAX_FRAMES, TRAIN_FPS
from ..core.motion import FaceMotion
from ..core.io import atomic_write_text
from . import metrics

__all__ = [
    "CI_Z",
    "DEFAULT_REPLICATIONS",
    "METRIC_DIRECTIONS",
    "MM_PER_PROMPT",
    "MM_PROMPTS",
    "EvaluationResult",
    "GenerateFn",
    "GeneratorOutputError",
    "MotionTextEvaluator",
    "clip_seeds",
    "evaluate_generator",
    "evaluate_motions",
    "evaluate_real",
    "evaluator_fingerprint",
    "format_results_table",
    "noise_generator",
    "replication_seed",
    "summarize",
    "text_blind_generator",
]

logger = logging.getLogger(__name__)

DEFAULT_REPLICATIONS = 20
CI_Z = 1.96  # 95 % normal quantile of the official interval 1.96 * std / sqrt(R)
MM_PROMPTS = 100  # prompts used for multimodality (HumanML3D's mm_num_samples)
MM_PER_PROMPT = 10  # generations per multimodality prompt

# Metric name -> (column title, better direction): "up", "down", or "real" (closer to the Real row).
METRIC_DIRECTIONS: dict[str, tuple[str, str]] = {
    "r_precision_top1": ("R@1", "up"),
    "r_precision_top2": ("R@2", "up"),
    "r_precision_top3": ("R@3", "up"),
    "fid": ("FID", "down"),
    "mm_dist": ("MM-Dist", "down"),
    "diversity": ("Diversity", "real"),
    "multimodality": ("MModality", "up"),
}
_ARROWS = {"up": "↑", "down": "↓", "real": "→"}

# Distinct streams of randomness derived from the user's seed (see replication_seed).
_STREAM_ORDER, _STREAM_GENERATE, _STREAM_DIVERSITY, _STREAM_MM_PROMPTS, _STREAM_MM_GENERATE, _STREAM_MM_PAIRS = range(6)


# --- interfaces ---------------------------------------------------------------------------------------
@runtime_checkable
class MotionTextEvaluator(Protocol):
    """What the protocol needs from a text-motion evaluator (``express4d_hf.models.evaluator``).

    ``embed_motions`` receives motions at any frame rate: the evaluator itself resamples them to
    20 fps, normalises them with its own statistics and zeroes padding past each clip's length in
    the normalised space, so every motion is judged at its own length. Both methods return
    ``[N, D]`` arrays whose rows follow the input order. An evaluator may also carry
    ``real_stats``: the ``(mu, sigma)`` of its real test-set motion embeddings, used by the
    ``evaluate`` module as the FID reference when no real motions are given.
    """

    def embed_texts(self, captions: list[str]) -> np.ndarray: ...

    def embed_motions(self, motions: list[FaceMotion]) -> np.ndarray: ...


GenerateFn = Callable[[list[str], list[int], list[int]], list[FaceMotion]]
"""``generate_fn(captions, num_frames, seeds) -> motions``: one motion per caption, ``num_frames[i]``
frames at 20 fps (any fps is accepted and resampled), deterministic given ``seeds[i]``, the clip's own seed
(:func:`clip_seeds`): clip ``i``'s output must depend on ``seeds[i]`` only, not on the other clips of the call."""


class GeneratorOutputError(ValueError):
    """A ``generate_fn`` returned the wrong number of motions, a short motion or non-finite values."""


def replication_seed(seed: int, replication: int, stream: int = _STREAM_GENERATE, *extra: int) -> int:
    """A 31-bit seed for one replication and one purpose: ``SeedSequence([seed, replication, stream, *extra])``.

    Streams keep purposes independent (clip order, generation, diversity draws, ...), so changing
    e.g. the number of diversity pairs never changes what a generator is asked to produce.

    >>> replication_seed(0, 0) == replication_seed(0, 0), replication_seed(0, 0) != replication_seed(0, 1)
    (True, True)
    """
    entropy = [int(seed), int(replication), int(stream), *(int(e) for e in extra)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)
    return int(state[0] >> 1)


def clip_seeds(seed: int, replication: int, indices: Sequence[int], stream: int = _STREAM_GENERATE,
               *extra: int) -> list[int]:  # fmt: skip
    """The generation seed of each clip: ``replication_seed(seed, replication, stream, *extra, index)`` where
    ``index`` is the clip's position in the test order (before any shuffle), the protocol's one seeding rule.

    >>> a = clip_seeds(0, 0, [5, 7]); b = clip_seeds(0, 0, [7])
    >>> a[1] == b[0], a[0] != a[1]
    (True, True)
    """
    return [replication_seed(seed, replication, stream, *extra, int(i)) for i in indices]


def evaluator_fingerprint(evaluator: Any) -> str:
    """``sha256:<16 hex>`` of an evaluator's weights and config: the identity every score carries.

    An evaluator may define ``fingerprint()`` itself; otherwise its ``state_dict()`` tensors (names, dtypes,
    shapes, bytes) and its ``config`` (JSON) are hashed. Objects with neither are ``"unidentified"``.
    Config keys starting with ``_`` are diffusers' bookkeeping, not the model: ``_name_or_path`` (where it was
    loaded from), ``_diffusers_version``, ``_class_name``, ``_use_default_values``; they are left out, so the
    same evaluator has the same fingerprint wherever it is loaded from and whichever library version saved it.
    """
    own = getattr(evaluator, "fingerprint", None)
    if callable(own):
        return str(own())
    state = getattr(evaluator, "state_dict", None)
    if not callable(state):
        return "unidentified"
    import hashlib

    digest = hashlib.sha256()
    config = getattr(evaluator, "config", None)
    digest.update(type(evaluator).__name__.encode())
    fields = {k: v for k, v in dict(config).items() if not str(k).startswith("_")} if config is not None else {}
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in sorted(state().items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}".encode())
        digest.update(array.view(-1).view(dtype=_byte_dtype()).numpy().tobytes() if array.numel() else b"")
    return "sha256:" + digest.hexdigest()[:16]


def _byte_dtype():
    import torch

    return torch.uint8


# --- results ------------------------------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % interval ``1.96 * std / sqrt(R)`` of per-replication values.

    ``std`` uses ddof=0 (``np.std``), as the official ``get_metric_statistics`` does, so intervals
    are comparable with published ones; ddof=1 would widen them by ``sqrt(R / (R - 1))`` (2.6 % at
    R = 20). One replication has an interval of 0.

    >>> summarize([1.0, 3.0])
    (2.0, 1.3859292911256331)
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values to summarize")
    return float(array.mean()), float(CI_Z * array.std() / math.sqrt(array.size))


@dataclasses.dataclass
class EvaluationResult:
    """Per-replication metric values of one evaluated method, with their seeds and timings.

    Attributes:
        values: metric name -> one value per replication (see :data:`METRIC_DIRECTIONS`).
        seeds: the seed of each replication (what ``generate_fn`` received, or the shuffle seed
            for :func:`evaluate_real`).
        aits_s: average inference time per sample: generation seconds per clip (None for Real).
        timings: wall-clock seconds of the phases (``generate_s``, ``embed_s``, ``metrics_s``, ``total_s``).
        info: the protocol constants used (clips, group size, diversity pairs, ...).
    """

    values: dict[str, list[float]]
    seeds: list[int]
    aits_s: float | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def replications(self) -> int:
        return len(self.seeds)

    def mean(self, metric: str) -> float:
        return summarize(self.values[metric])[0]

    def ci95(self, metric: str) -> float:
        return summarize(self.values[metric])[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON shape: ``{"metrics": {name: {"mean", "ci95", "values"}}, "aits_s", "seeds", "replications", ...}``."""
        summary = {}
        for name, values in self.values.items():
            mean, ci95 = summarize(values)
            summary[name] = {"mean": mean, "ci95": ci95, "values": [float(v) for v in values]}
        return {
            "metrics": summary,
            "aits_s": self.aits_s,
            "seeds": [int(s) for s in self.seeds],
            "replications": self.replications,
            "timings": {k: float(v) for k, v in self.timings.items()},
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        try:
            values = {name: list(entry["values"]) for name, entry in data["metrics"].items()}
            seeds = list(data["seeds"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not an EvaluationResult dict: missing field {err}") from None
        return cls(values, seeds, data.get("aits_s"), dict(data.get("timings") or {}), dict(data.get("info") or {}))

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> EvaluationResult:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def format_results_table(rows: dict[str, EvaluationResult], digits: int = 3,
                         extra_columns: dict[str, dict[str, str]] | None = None) -> str:  # fmt: skip
    """A markdown table: one row per method, ``mean ± ci95`` per metric, arrows for the better direction.

    ↑ higher is better, ↓ lower is better, → closer to the Real row is better. Columns appear for
    metrics at least one row has; a row lacking one shows "–". AITS (seconds per generated clip)
    is shown when any row has it. ``extra_columns`` (title -> method -> cell text) are appended as given
    ("–" for a method without a cell).

    >>> r = EvaluationResult({"fid": [1.0, 3.0]}, seeds=[0, 1], aits_s=0.5)
    >>> print(format_results_table({"Model": r}))
    | Method | FID ↓ | AITS (s) |
    |---|---|---|
    | Model | 2.000 ± 1.386 | 0.500 |
    """
    if not rows:
        raise ValueError("no rows to format")
    present = {name for result in rows.values() for name in result.values}
    metrics = [m for m in METRIC_DIRECTIONS if m in present] + sorted(present - set(METRIC_DIRECTIONS))
    show_aits = any(result.aits_s is not None for result in rows.values())
    header = ["Method"]
    for metric in metrics:
        title, direction = METRIC_DIRECTIONS.get(metric, (metric, None))
        header.append(f"{title} {_ARROWS[direction]}" if direction else title)
    if show_aits:
        header.append("AITS (s)")
    extra_columns = extra_columns or {}
    header.extend(extra_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, result in rows.items():
        cells = [method]
        for metric in metrics:
            if metric in result.values and len(result.values[metric]):
                mean, ci95 = summarize(result.values[metric])
                cells.append(f"{mean:.{digits}f} ± {ci95:.{digits}f}")
            else:
                cells.append("–")
        if show_aits:
            cells.append("–" if result.aits_s is None else f"{result.aits_s:.{digits}f}")
        cells.extend(column.get(method, "–") for column in extra_columns.values())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- inputs --------------------------------------------------------------------------------------------------
def _prepare_clips(clips: Sequence[FaceMotion], group_size: int, max_frames: int | None) -> list[FaceMotion]:
    """Real clips at 20 fps, cropped to ``max_frames``, each with a caption."""
    clips = list(clips)
    if len(clips) < group_size:
        raise ValueError(
            f"the protocol needs at least one group of {group_size} clips for R-precision, got {len(clips)}"
        )
    prepared = []
    for i, clip in enumerate(clips):
        if not isinstance(clip, FaceMotion):
            raise TypeError(f"clip {i} is a {type(clip).__name__}, expected a FaceMotion with a caption")
        if not clip.caption or not clip.caption.strip():
            raise ValueError(f"clip {i} ({clip.metadata.get('source', 'no source')}) has no caption")
        clip = clip.resample(TRAIN_FPS)
        if max_frames is not None and clip.num_frames > max_frames:
            clip = clip.crop(0, max_frames)
        prepared.append(clip)
    return prepared


def _embed_captions(evaluator: MotionTextEvaluator, clips: list[FaceMotion]) -> np.ndarray:
    """Caption embeddings of ``clips``; an evaluator whose ``embed_texts`` takes ``tokens`` (the official GloVe + POS
    text branch) also gets each caption's ``word/POS`` tokens from the release when every clip has them."""
    tokens = [clip.metadata.get("pos_tokens") for clip in clips]
    if all(tokens) and "tokens" in inspect.signature(evaluator.embed_texts).parameters:
        return _embed(evaluator, [clip.caption for clip in clips], "texts", tokens=tokens)
    return _embed(evaluator, [clip.caption for clip in clips], "texts")


def _embed(evaluator: MotionTextEvaluator, items: list, kind: str, **kwargs: Any) -> np.ndarray:
    method = evaluator.embed_texts if kind == "texts" else evaluator.embed_motions
    emb = np.asarray(method(items, **kwargs), dtype=np.float64)
    if emb.ndim != 2 or len(emb) != len(items):
        raise ValueError(f"evaluator.embed_{kind} returned shape {emb.shape} for {len(items)} inputs; expected [N, D]")
    if not np.isfinite(emb).all():
        raise ValueError(
            f"evaluator.embed_{kind} returned non-finite embeddings (row {int(np.argwhere(~np.isfinite(emb))[0, 0])})"
        )
    return emb


def _generate(
    generate_fn: GenerateFn, captions: list[str], num_frames: list[int], seeds: list[int], batch_size: int | None
) -> list[FaceMotion]:
    """Call ``generate_fn`` in chunks of ``batch_size``, each clip with its own seed, and check every output."""
    batch_size = batch_size or len(captions)
    motions: list[FaceMotion] = []
    for start in range(0, len(captions), batch_size):
        want_caps, want_lens = captions[start : start + batch_size], num_frames[start : start + batch_size]
        out = list(generate_fn(list(want_caps), list(want_lens), list(seeds[start : start + batch_size])))
        if len(out) != len(want_caps):
            raise GeneratorOutputError(f"generate_fn returned {len(out)} motions for {len(want_caps)} captions")
        for offset, (motion, caption, length) in enumerate(zip(out, want_caps, want_lens)):
            motions.append(_check_generated(motion, caption, length, start + offset))
    return motions


def _check_generated(motion: Any, caption: str, length: int, index: int) -> FaceMotion:
    if isinstance(motion, np.ndarray):
        if motion.ndim != 2 or motion.shape[1] != NUM_CHANNELS:
            raise GeneratorOutputError(
                f"generated motion {index} has shape {motion.shape}, expected [frames, {NUM_CHANNELS}]"
            )
        motion = FaceMotion(motion, fps=TRAIN_FPS)
    if not isinstance(motion, FaceMotion):
        raise GeneratorOutputError(f"generated motion {index} is a {type(motion).__name__}, expected a FaceMotion")
    motion = motion.resample(TRAIN_FPS)
    if motion.num_frames < length:
        raise GeneratorOutputError(
            f"generated motion {index} ({caption!r}) has {motion.num_frames} frames at {TRAIN_FPS} fps but "
            f"{length} were requested; generate_fn must honour num_frames"
        )
    if not np.isfinite(motion.values).all():
        raise GeneratorOutputError(f"generated motion {index} ({caption!r}) has NaN or infinite values")
    if motion.num_frames > length:
        motion = motion.crop(0, length)
    return motion.replace(caption=caption)


# --- the protocol --------------------------------------------------------------------------------------
def evaluate_generator(
    generate_fn: GenerateFn,
    clips: Sequence[FaceMotion],
    evaluator: MotionTextEvaluator,
    replications: int = DEFAULT_REPLICATIONS,
    seed: int = 0,
    group_size: int = EVAL_GROUP_SIZE,
    diversity_pairs: int | None = None,
    multimodality: bool = False,
    mm_prompts: int = MM_PROMPTS,
    mm_per_prompt: int = MM_PER_PROMPT,
    mm_pairs: int | None = None,
    batch_size: int | None = None,
    max_frames: int | None = MAX_FRAMES,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate a text-to-motion generator on real test clips over ``replications`` runs.

    Before the replications: real clips are resampled to 20 fps and cropped to ``max_frames``;
    their captions and motions are embedded once; the FID reference is the Gaussian fit of those
    real motion embeddings.

    Replication ``r`` (seeds from :func:`replication_seed`):

    1. shuffle the clip order with ``(seed, r)``, so the groups of ``group_size`` that R-Precision
       ranks within differ per replication (as in the official protocol, whose loader shuffled);
    2. ``generate_fn(captions, num_frames, clip_seeds)`` for the whole split at the real lengths (in
       chunks of ``batch_size``; each clip's seed from :func:`clip_seeds`); outputs are resampled to 20 fps,
       cropped to the requested length, and rejected (:class:`GeneratorOutputError`) when shorter
       or non-finite;
    3. embed the generated motions and compute R-Precision top-1..3 and MM-Dist against the
       (shuffled) caption embeddings, FID against the real embeddings, and Diversity over
       ``diversity_pairs`` pairs (default ``min(300, N - 1)``; see
       :func:`~express4d_hf.evaluation.metrics.default_diversity_pairs`);
    4. with ``multimodality=True``: for ``mm_prompts`` clips chosen once with ``seed`` (the same
       ones in every replication), call ``generate_fn`` ``mm_per_prompt`` times with distinct
       per-clip seeds, and compute :func:`~express4d_hf.evaluation.metrics.multimodality` over ``mm_pairs``
       pairs per prompt (None: all distinct pairs, exact).

    The result holds every per-replication value; :meth:`EvaluationResult.to_dict` adds the mean
    and the 95 % interval ``1.96 * std / sqrt(R)``. ``aits_s`` is the main generation's seconds per
    clip (multimodality generations excluded).
    """
    if replications < 1:
        raise ValueError(f"replications must be >= 1, got {replications}")
    started = time.perf_counter()
    real = _prepare_clips(clips, group_size, max_frames)
    num_clips = len(real)
    captions = [clip.caption for clip in real]
    lengths = [clip.num_frames for clip in real]
    text_emb = _embed_captions(evaluator, real)
    real_emb = _embed(evaluator, real, "motions")
    real_stats = metrics.gaussian_stats(real_emb)

    mm_index = np.array([], dtype=int)
    if multimodality:
        if mm_per_prompt < 2:
            raise ValueError(f"multimodality needs mm_per_prompt >= 2, got {mm_per_prompt}")
        picker = np.random.default_rng(replication_seed(seed, 0, _STREAM_MM_PROMPTS))
        mm_index = np.sort(picker.choice(num_clips, min(mm_prompts, num_clips), replace=False))

    values: dict[str, list[float]] = {}
    seeds: list[int] = []
    timings = {"generate_s": 0.0, "generate_mm_s": 0.0, "embed_s": 0.0, "metrics_s": 0.0}
    bar = tqdm(range(replications), desc="replications", disable=not progress, unit="rep")
    for r in bar:
        order = np.random.default_rng(replication_seed(seed, r, _STREAM_ORDER)).permutation(num_clips)
        gen_seed = replication_seed(seed, r, _STREAM_GENERATE)
        seeds.append(gen_seed)

        t0 = time.perf_counter()
        generated = _generate(generate_fn, [captions[i] for i in order], [lengths[i] for i in order],
                              clip_seeds(seed, r, order), batch_size)  # fmt: skip
        t1 = time.perf_counter()
        gen_emb = _embed(evaluator, generated, "motions")
        t2 = time.perf_counter()
        row = metrics.embedding_metrics(
            text_emb[order], gen_emb, real_stats, group_size=group_size, diversity_pairs=diversity_pairs,
            seed=replication_seed(seed, r, _STREAM_DIVERSITY),
        )  # fmt: skip
        t3 = time.perf_counter()
        timings["generate_s"] += t1 - t0
        timings["embed_s"] += t2 - t1
        timings["metrics_s"] += t3 - t2

        if multimodality:
            mm_caps, mm_lens = [captions[i] for i in mm_index], [lengths[i] for i in mm_index]
            per_prompt = []
            for m in range(mm_per_prompt):
                t4 = time.perf_counter()
                mm_seeds = clip_seeds(seed, r, mm_index, _STREAM_MM_GENERATE, m)
                motions = _generate(generate_fn, mm_caps, mm_lens, mm_seeds, batch_size)
                t5 = time.perf_counter()
                per_prompt.append(_embed(evaluator, motions, "motions"))
                timings["generate_mm_s"] += t5 - t4
                timings["embed_s"] += time.perf_counter() - t5
            row["multimodality"] = metrics.multimodality(
                np.stack(per_prompt, axis=1), mm_pairs, replication_seed(seed, r, _STREAM_MM_PAIRS)
            )

        for name, value in row.items():
            values.setdefault(name, []).append(float(value))
        bar.set_postfix(r1=f"{row['r_precision_top1']:.3f}", fid=f"{row['fid']:.3f}")
        logger.debug("replication %d (seed %d): %s", r, gen_seed, row)

    timings["total_s"] = time.perf_counter() - started
    info = _protocol_info(num_clips, group_size, diversity_pairs, seed, max_frames, evaluator)
    if multimodality:
        info.update(mm_prompts=len(mm_index), mm_per_prompt=mm_per_prompt, mm_pairs=mm_pairs)
    aits = timings["generate_s"] / (replications * num_clips)
    return EvaluationResult(values, seeds, aits, timings, info)


def evaluate_real(
    clips: Sequence[FaceMotion],
    evaluator: MotionTextEvaluator,
    replications: int = DEFAULT_REPLICATIONS,
    seed: int = 0,
    group_size: int = EVAL_GROUP_SIZE,
    diversity_pairs: int | None = None,
    max_frames: int | None = MAX_FRAMES,
    progress: bool = True,
) -> EvaluationResult:
    """The "Real" row: the real test clips scored as if they were a generator's output.

    Clips are prepared as in :func:`evaluate_generator` and embedded once. Replication ``r``
    shuffles the clip order with the same ``(seed, r)`` stream as :func:`evaluate_generator`, then:

    - R-Precision top-1..3 and MM-Dist of each real clip against its own caption, over the
      shuffled groups of ``group_size``;
    - FID between two disjoint random halves of the shuffled real embeddings (the first
      ``N // 2`` against the next ``N // 2``). The official code compared the set with itself and
      got ~0 by construction; the half-split value is the sampling-noise floor of FID at this
      test-set size. It is a floor for half-size sets, so it runs somewhat above what a perfect
      generator (N samples against N real) would score;
    - Diversity of the real embeddings, with the same pair count and seed stream as for generators.

    Multimodality is not defined (one performance per caption). ``seeds`` are the shuffle seeds.
    """
    if replications < 1:
        raise ValueError(f"replications must be >= 1, got {replications}")
    started = time.perf_counter()
    real = _prepare_clips(clips, group_size, max_frames)
    num_clips = len(real)
    if num_clips // 2 < 2:
        raise ValueError(f"the half-split FID needs at least 4 clips, got {num_clips}")
    text_emb = _embed_captions(evaluator, real)
    real_emb = _embed(evaluator, real, "motions")
    embedded = time.perf_counter()

    half = num_clips // 2
    values, seeds = _score_fixed_pairs(
        text_emb, real_emb, lambda order: metrics.frechet_distance(real_emb[order[:half]], real_emb[order[half : 2 * half]]),
        replications, seed, group_size, diversity_pairs, progress, "real replications",
    )  # fmt: skip
    finished = time.perf_counter()
    timings = {"embed_s": embedded - started, "metrics_s": finished - embedded, "total_s": finished - started}
    info = _protocol_info(num_clips, group_size, diversity_pairs, seed, max_frames, evaluator)
    info["fid_reference"] = "half split of the real clips"
    return EvaluationResult(values, seeds, None, timings, info)


def evaluate_motions(
    motions: Sequence[FaceMotion],
    real_clips: Sequence[FaceMotion],
    evaluator: MotionTextEvaluator,
    replications: int = DEFAULT_REPLICATIONS,
    seed: int = 0,
    group_size: int = EVAL_GROUP_SIZE,
    diversity_pairs: int | None = None,
    max_frames: int | None = MAX_FRAMES,
    progress: bool = True,
) -> EvaluationResult:
    """Score motions that already exist, each with its caption (made by a method outside this package, say).

    The motions stand where a generator's output would: per replication the pairs are shuffled with the same
    ``(seed, r)`` stream as every other row, then R-Precision, MM-Dist, Diversity and FID against the Gaussian
    fit of ``real_clips`` (the test split) are computed as in :func:`evaluate_generator`. Real test clips given
    as ``motions`` therefore get the Real row's R-Precision and MM-Dist exactly (and an FID near 0: they are the
    reference). ``aits_s`` is None: the generation time is unknown.
    """
    if replications < 1:
        raise ValueError(f"replications must be >= 1, got {replications}")
    started = time.perf_counter()
    given = _prepare_clips(motions, group_size, max_frames)
    real = _prepare_clips(real_clips, group_size, max_frames)
    text_emb = _embed_captions(evaluator, given)
    motion_emb = _embed(evaluator, given, "motions")
    real_stats = metrics.gaussian_stats(_embed(evaluator, real, "motions"))
    embedded = time.perf_counter()
    fid = metrics.frechet_distance_from_stats(*real_stats, *metrics.gaussian_stats(motion_emb))  # order-free
    values, seeds = _score_fixed_pairs(text_emb, motion_emb, lambda order: fid, replications, seed, group_size,
                                       diversity_pairs, progress, "replications")  # fmt: skip
    finished = time.perf_counter()
    timings = {"embed_s": embedded - started, "metrics_s": finished - embedded, "total_s": finished - started}
    info = _protocol_info(len(given), group_size, diversity_pairs, seed, max_frames, evaluator)
    info["fid_reference"] = f"{len(real)} real clips"
    return EvaluationResult(values, seeds, None, timings, info)


def _score_fixed_pairs(text_emb: np.ndarray, motion_emb: np.ndarray, fid: Callable[[np.ndarray], float],
                       replications: int, seed: int, group_size: int, diversity_pairs: int | None, progress: bool,
                       desc: str) -> tuple[dict[str, list[float]], list[int]]:  # fmt: skip
    """Replications over pairs that do not change between them (real clips, or motions made elsewhere): each
    shuffles the pairs with the ``(seed, r)`` order stream, then R-Precision and MM-Dist over the shuffled groups,
    ``fid(order)``, and Diversity of the motions in their given order. Returns the values and the shuffle seeds."""
    values: dict[str, list[float]] = {}
    seeds: list[int] = []
    for r in tqdm(range(replications), desc=desc, disable=not progress, unit="rep"):
        order_seed = replication_seed(seed, r, _STREAM_ORDER)
        seeds.append(order_seed)
        order = np.random.default_rng(order_seed).permutation(len(motion_emb))
        row = {
            f"r_precision_top{k + 1}": float(v)
            for k, v in enumerate(metrics.r_precision(text_emb[order], motion_emb[order], 3, group_size))
        }
        row["mm_dist"] = metrics.matching_score(text_emb[order], motion_emb[order], group_size)
        row["fid"] = fid(order)
        row["diversity"] = metrics.diversity(motion_emb, diversity_pairs, replication_seed(seed, r, _STREAM_DIVERSITY))
        for name, value in row.items():
            values.setdefault(name, []).append(float(value))
    return values, seeds


def _protocol_info(num_clips: int, group_size: int, diversity_pairs: int | None, seed: int, max_frames,
                   evaluator: Any) -> dict:  # fmt: skip
    return {
        "evaluator": evaluator_fingerprint(evaluator),
        "num_clips": num_clips,
        "group_size": group_size,
        "r_precision_groups": num_clips // group_size,
        "diversity_pairs": diversity_pairs
        if diversity_pairs is not None
        else metrics.default_diversity_pairs(num_clips),
        "seed": seed,
        "fps": TRAIN_FPS,
        "max_frames": max_frames,
        "ci": "1.96 * std(ddof=0) / sqrt(R)",
    }


# --- reference generators -----------------------------------------------------------------------------------
def text_blind_generator(train_clips: Sequence[FaceMotion], seed: int = 0) -> GenerateFn:
    """A ``generate_fn`` that ignores the text: each request gets a random real *training* clip.

    The clip (resampled to 20 fps) is cropped to the requested length at a random start when
    longer, or looped when shorter. Each clip's choices come from ``default_rng([seed, clip_seed])``, so a
    clip gets the same motion whatever else is in the call. Its R-Precision is the chance level the evaluator sees
    for realistic but unrelated motion; its FID shows how close "real but wrong" motion gets.
    """
    pool = [clip.resample(TRAIN_FPS) for clip in train_clips]
    if not pool:
        raise ValueError("text_blind_generator needs at least one training clip")

    def generate(captions: list[str], num_frames: list[int], seeds: list[int]) -> list[FaceMotion]:
        motions = []
        for caption, length, clip_seed in zip(captions, num_frames, seeds):
            rng = np.random.default_rng([int(seed), int(clip_seed)])
            index = int(rng.integers(len(pool)))
            source = pool[index].values
            if len(source) >= length:
                start = int(rng.integers(len(source) - length + 1))
                values = source[start : start + length]
            else:
                values = np.resize(source, (length, NUM_CHANNELS))  # loops whole frames
            motions.append(FaceMotion(values, fps=TRAIN_FPS, caption=caption,
                                      metadata={"generator": "text_blind", "train_clip": index}))  # fmt: skip
        return motions

    return generate


def noise_generator(mean, std, seed: int = 0) -> GenerateFn:
    """A ``generate_fn`` of per-channel Gaussian noise with the data's mean and std (the "Noise" row).

    ``mean`` and ``std`` are length-61 arrays, or pass a
    :class:`~express4d_hf.data.stats.NormStats`'s ``.mean`` and ``.std``. Every frame and channel
    is drawn independently from ``default_rng([seed, clip_seed])`` at 20 fps: the score of motion
    with the right marginal statistics and no structure at all.

    >>> gen = noise_generator([0.0] * 61, [1.0] * 61, seed=1)
    >>> [m.num_frames for m in gen(["a", "b"], [20, 30], [0, 1])]
    [20, 30]
    """
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if mean.shape != (NUM_CHANNELS,) or std.shape != (NUM_CHANNELS,):
        raise ValueError(f"mean and std must have {NUM_CHANNELS} values, got {mean.shape} and {std.shape}")
    if (std < 0).any() or not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError("std must be finite and non-negative, mean finite")

    def generate(captions: list[str], num_frames: list[int], seeds: list[int]) -> list[FaceMotion]:
        return [
            FaceMotion(mean + std * np.random.default_rng([int(seed), int(clip_seed)]).standard_normal((length, NUM_CHANNELS)),
                       fps=TRAIN_FPS, caption=caption, metadata={"generator": "noise"})
            for caption, length, clip_seed in zip(captions, num_frames, seeds)
        ]  # fmt: skip

    return generate
