"""Scoring pipelines with the protocol: the one adapter from a pipeline to a ``generate_fn``, how MDM samples
while scored, the test subset, and the quick check a model card reports.

The benchmark's rows, ``express4d evaluate`` and the scores in a model card all go through
:func:`pipeline_generate_fn`, so for the same seed they hand every clip the same noise: each clip's
generator is seeded with its own protocol seed (:func:`~express4d_hf.evaluation.protocol.clip_seeds`), which
does not depend on the batch or chunk it is generated in.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from ..core.constants import EVAL_GROUP_SIZE
from ..core.motion import FaceMotion
from .protocol import (
    EvaluationResult,
    GenerateFn,
    MotionTextEvaluator,
    evaluate_generator,
    evaluator_fingerprint,
    format_results_table,
    text_blind_generator,
)

__all__ = ["Sampling", "card_evaluation_markdown", "pipeline_generate_fn", "score_for_card", "score_pipeline",
           "test_subset"]  # fmt: skip


@dataclasses.dataclass
class Sampling:
    """How a diffusion pipeline samples while it is scored (the benchmark's and ``express4d evaluate``'s flags).

    Pipelines without a scheduler (T2M-GPT) ignore every field but ``extra``.
    """

    sampler: str | None = None  # "ddim", "dpmsolver++", "sde-dpmsolver++" or "ddpm"; None keeps the pipeline's own
    steps: int | None = None  # denoising steps (None: 50, or every training step for "ddpm")
    guidance_scale: float | None = None  # classifier-free guidance (None: the pipeline's default)
    guidance_rescale: float = 0.0  # pull the guided prediction's spread back towards the conditional one's
    eta: float = 0.0  # DDIM's per-step noise share
    fast_sampling: bool = True  # on a GPU, a bf16 denoiser and the sampling loop replayed as a CUDA graph
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more keyword arguments of the pipeline's call

    def prepare(self, pipe: Any) -> dict[str, Any]:
        """Set ``pipe`` up for this sampling (scheduler, fast path) and return the keyword arguments of its call."""
        kwargs = dict(self.extra)
        if not hasattr(pipe, "scheduler"):
            return kwargs
        from ..pipelines.mdm import make_scheduler

        if self.sampler is not None:
            pipe.scheduler = make_scheduler(self.sampler, pipe.scheduler.config)
        full = type(pipe.scheduler).__name__ == "DDPMScheduler"
        kwargs["num_inference_steps"] = self.steps or (pipe.scheduler.config.num_train_timesteps if full else 50)
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        if self.guidance_rescale:
            kwargs["guidance_rescale"] = self.guidance_rescale
        if self.eta:
            kwargs["eta"] = self.eta
        if self.fast_sampling and pipe.device.type == "cuda" and hasattr(pipe, "enable_fast_sampling"):
            pipe.enable_fast_sampling()
        return kwargs

    def describe(self) -> dict[str, Any]:
        """The settings as recorded beside scores."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, 0.0) or k == "fast_sampling"}


def pipeline_generate_fn(pipe: Any, **call_kwargs: Any) -> GenerateFn:
    """Adapt a motion pipeline to the protocol's ``generate_fn(captions, num_frames, seeds)``: one CPU generator
    per clip, seeded with that clip's protocol seed (the noise is then the same in any batch, and the starting
    noise the same on any device; MDM's DDPM draws its step noise on the device from a seed the clip's generator
    gives, so its stream differs between CPU and CUDA: ``pipelines.mdm.AncestralNoise``)."""
    import torch

    def generate(captions: list[str], num_frames: list[int], seeds: list[int]) -> list[FaceMotion]:
        generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
        return pipe(list(captions), num_frames=list(num_frames), generator=generators, **call_kwargs).motions

    return generate


def test_subset(clips: Sequence[FaceMotion], max_clips: int | None, group_size: int = EVAL_GROUP_SIZE) -> list[FaceMotion]:
    """The first clips of the test split in whole groups of ``group_size`` (the split order is fixed)."""
    count = len(clips) if max_clips is None else min(len(clips), max_clips)
    count -= count % group_size
    if count < group_size:
        raise ValueError(f"the test split has {len(clips)} usable clips, fewer than one group of {group_size}")
    return list(clips[:count])


test_subset.__test__ = False  # a helper named test_*: not for pytest to collect


def score_pipeline(
    pipe: Any,
    evaluator: MotionTextEvaluator,
    clips: Sequence[FaceMotion],
    sampling: Sampling | None = None,
    replications: int = 3,
    seed: int = 0,
    batch_size: int | None = 256,
    multimodality: bool = False,
    progress: bool = True,
) -> EvaluationResult:
    """The protocol's row of ``pipe`` on ``clips`` (test clips with captions), sampled as ``sampling`` says."""
    pipe.set_progress_bar_config(disable=True)
    call_kwargs = (sampling or Sampling()).prepare(pipe)
    result = evaluate_generator(pipeline_generate_fn(pipe, **call_kwargs), clips, evaluator, replications=replications,
                                seed=seed, batch_size=batch_size, multimodality=multimodality, progress=progress)  # fmt: skip
    result.info["sampling"] = {k: v for k, v in call_kwargs.items() if isinstance(v, (int, float, str, bool))}
    if hasattr(pipe, "scheduler"):
        result.info["sampling"]["scheduler"] = type(pipe.scheduler).__name__
    return result


def score_for_card(
    pipe: Any,
    evaluator_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    sampling: Sampling | None = None,
    replications: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """A quick check after training for the model card: ``pipe`` on the test split next to the text-blind control
    (a few replications, not the published 20). Returns ``{"model", "text_blind", "protocol"}``: two
    ``EvaluationResult.to_dict()`` values and the settings, the evaluator's fingerprint among them."""
    from ..data.hub import load_express4d
    from ..data.splits import clips_from_split
    from ..models.evaluator import TextMotionEvaluator

    evaluator = TextMotionEvaluator.from_pretrained(evaluator_dir).eval()
    splits = load_express4d(data, progress=progress)
    test_clips, train_clips = clips_from_split(splits["test"]), clips_from_split(splits["train"])
    model = score_pipeline(pipe, evaluator, test_clips, sampling, replications, seed, progress=progress)
    blind = evaluate_generator(text_blind_generator(train_clips, seed=seed), test_clips, evaluator,
                               replications=replications, seed=seed, progress=progress)  # fmt: skip
    return {
        "model": model.to_dict(),
        "text_blind": blind.to_dict(),
        "protocol": {"replications": replications, "seed": seed, "test_clips": len(test_clips),
                     "evaluator": str(evaluator_dir), "evaluator_fingerprint": evaluator_fingerprint(evaluator),
                     "sampling": model.info.get("sampling", {})},  # fmt: skip
    }


def card_evaluation_markdown(scores: dict[str, Any], model_title: str) -> str:
    """A model card's Evaluation section from :func:`score_for_card` output."""
    rows = {f"{model_title} (this model)": EvaluationResult.from_dict(scores["model"]),
            "Text-blind control (random training clip)": EvaluationResult.from_dict(scores["text_blind"])}  # fmt: skip
    p = scores["protocol"]
    sampling = ", ".join(f"{k} {v}" for k, v in p.get("sampling", {}).items()) or "default sampling"
    return (format_results_table(rows) + f"\n\n{p['test_clips']} test clips, {p['replications']} replications "
            f"(mean ± 95% interval), {sampling}, AITS = seconds per generated clip; evaluator "
            f"`{p.get('evaluator_fingerprint', 'unidentified')}`. A quick check after training; the published "
            "protocol uses 20 replications (`express4d evaluate`).")  # fmt: skip
