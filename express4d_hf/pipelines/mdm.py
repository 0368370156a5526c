"""``Express4DMDMPipeline``: text -> facial motion with the MDM diffusion baseline, as a diffusers pipeline.

Components (each saved in its own sub-folder by ``save_pretrained`` and reloaded by ``from_pretrained``):

- ``denoiser``: :class:`~express4d_hf.models.mdm.MDMDenoiser` (predicts the clean motion x0);
- ``scheduler``: any diffusers scheduler configured with ``prediction_type="sample"``. The default is the
  training schedule, ``DDPMScheduler(1000 steps, squaredcos_cap_v2)``; DDIM or DPM-Solver++ swap in with
  ``pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`` or :func:`make_scheduler`;
- ``text_encoder`` + ``tokenizer``: any frozen ``transformers`` encoder (default: all-MiniLM-L6-v2, offline);
  prompts are mean-pooled into one vector; an order-aware denoiser (``text_conditioning="tokens"``) also gets
  the token states and their mask (the unconditional branch masks every token);
- ``normalizer``: :class:`~express4d_hf.models.normalizer.MotionNormalizer`, the training stats.

Unlike the official code, a free-text prompt gets the length you ask for (``num_frames`` or ``duration_s``,
per prompt, mixed in one batch), frames past it are removed, sampling can use 20-50 DDIM/DPM-Solver++
steps instead of 1000, and the output is a :class:`~express4d_hf.FaceMotion` ready for CSV export.

On a GPU, :meth:`Express4DMDMPipeline.enable_fast_sampling` casts the denoiser to bf16 and records the whole
deterministic sampling loop (every denoiser call and scheduler step) as one CUDA graph per batch shape,
replayed on later calls: at batch 1 the eager loop is bound by thousands of kernel launches, not arithmetic.
"""

from __future__ import annotations

import inspect
import json
import math
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch.nn import functional as F

from ..core.constants import DIFFUSION_SAMPLERS, MAX_FRAMES, MIN_FRAMES
from ..core.motion import FaceMotion
from ..models.mdm import MDMDenoiser
from ..models.normalizer import MotionNormalizer
from ..models.text import TextEncoding, encode_prompts, load_text_encoder, pool_token_states, prompt_max_tokens, tokenize_prompts
from .common import (
    ModelCardMixin,
    MotionBatchOutput,
    MotionPipelineOutput,
    call_step_callback,
    check_guidance_scale,
    check_prompts,
    check_step_callback,
    lengths_mask,
    resolve_num_frames,
    to_face_motions,
)
from .cuda_graphs import GraphCache, weight_pointers
from .editing import DEFAULT_SEAM_BLEND_S, prepare_edit

OUTPUT_TYPES = ("motion", "pt", "np", "latent")
DEFAULT_TRANSITION_S = 1.0  # seconds each window of a composed timeline keeps from the previous one
MAX_TIMELINE_S = 600.0  # a composed performance is at most 10 minutes
SCHEDULER_NAMES = DIFFUSION_SAMPLERS
MAX_CACHED_GRAPHS = 16  # recordings kept per pipeline: a sampling loop per batch size / steps / scheduler,
# a text encoder per batch size
DDPM_NOISE_CHUNK_STEPS = 16  # steps of DDPM's ancestral noise drawn per clip at once (AncestralNoise). A constant,
# never derived from the batch: the values a generator gives depend on how much is drawn per call.
DDPM_NOISE_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")  # what ddpm_step_with_noise reproduces


def default_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """The training noise schedule: MDM's cosine betas, x0 prediction, no clipping (motion is z-scored)."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        clip_sample=False,
    )


def make_scheduler(name: str, config) -> Any:
    """A sampler by short name, built from another scheduler's ``config`` (same betas and prediction type).

    ``"ddpm"`` (ancestral, meant for the full 1000 steps), ``"ddim"`` (deterministic, 20-100 steps) or
    ``"dpmsolver++"`` (multistep DPM-Solver++, 10-50 steps) or ``"sde-dpmsolver++"`` (its stochastic
    variant: fresh noise every step, like DDPM, but second order: 20-50 steps). Few-step samplers use
    "trailing" timestep spacing so the sampling starts from pure noise (t=999).
    """
    if name == "ddpm":
        return DDPMScheduler.from_config(config)
    if name == "ddim":
        return DDIMScheduler.from_config(config, timestep_spacing="trailing", set_alpha_to_one=True)
    if name in ("dpmsolver++", "dpm", "dpm-solver++", "sde-dpmsolver++"):
        algorithm = "sde-dpmsolver++" if name.startswith("sde") else "dpmsolver++"
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type=algorithm, solver_order=2, timestep_spacing="trailing"
        )
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")


def takes_step_noise(scheduler, eta: float = 0.0) -> bool:
    """True when each step adds fresh noise that the pipeline draws up front and passes in
    (``variance_noise``): DDIM with ``eta > 0`` and the SDE variants of DPM-Solver.

    Drawn up front, per clip, the noise depends only on the clip's generator (not on its batch), and a
    recorded loop replays exactly because the noise is one of its inputs.
    """
    if isinstance(scheduler, DDIMScheduler):
        return eta > 0
    return "variance_noise" in _step_parameters(scheduler) and "sde" in str(
        getattr(scheduler.config, "algorithm_type", "")
    )


def is_replayable(scheduler) -> bool:
    """True when the sampling loop, as the pipeline runs it, draws no random numbers of its own, so
    :meth:`Express4DMDMPipeline.enable_fast_sampling` can record it as a CUDA graph and replay it.

    DDIM (any ``eta``), DPM-Solver++ (ODE and SDE: see :func:`takes_step_noise`) and UniPC qualify;
    DDPM runs eagerly: its ancestral noise (:class:`AncestralNoise`) is drawn chunk by chunk as the loop goes.
    """
    name = type(scheduler).__name__
    return name in ("DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")


def draws_ancestral_noise(scheduler) -> bool:
    """True when the pipeline draws DDPM's per-step ancestral noise itself (:class:`AncestralNoise`) and steps
    with :func:`ddpm_step_with_noise`: a plain ``DDPMScheduler`` with a fixed variance
    (``DDPM_NOISE_VARIANCE_TYPES``). Otherwise (learned variances, subclasses) ``scheduler.step`` draws it from
    the call's generator, as diffusers does."""
    return type(scheduler) is DDPMScheduler and scheduler.config.variance_type in DDPM_NOISE_VARIANCE_TYPES


def ddpm_step_with_noise(scheduler: DDPMScheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor,
                         noise: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``scheduler.step(model_output, timestep, sample).prev_sample`` with the ancestral noise given.

    diffusers' ``DDPMScheduler.step`` draws the noise itself (``randn_tensor(model_output.shape, generator)``) and has
    no ``variance_noise`` argument; this is the same step, operation for operation (diffusers 0.42), with
    ``noise`` in place of that draw: equal to ``step`` given a generator that draws ``noise``. Every
    ``prediction_type``, clipping and thresholding are handled as there; the variance types are the fixed ones of
    ``DDPM_NOISE_VARIANCE_TYPES`` (the learned ones need the model's predicted variance: a ``ValueError``).
    """
    if not draws_ancestral_noise(scheduler):
        raise ValueError(
            f"ddpm_step_with_noise takes a DDPMScheduler with variance_type in {DDPM_NOISE_VARIANCE_TYPES}, got "
            f"{type(scheduler).__name__} with variance_type={getattr(scheduler.config, 'variance_type', None)!r}"
        )
    t = timestep
    prev_t = scheduler.previous_timestep(t)
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t

    prediction = scheduler.config.prediction_type
    if prediction == "epsilon":
        x0 = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    elif prediction == "sample":
        x0 = model_output
    elif prediction == "v_prediction":
        x0 = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
    else:
        raise ValueError(f"prediction_type {prediction!r} must be one of `epsilon`, `sample` or `v_prediction`")
    if scheduler.config.thresholding:
        x0 = scheduler._threshold_sample(x0)
    elif scheduler.config.clip_sample:
        x0 = x0.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)

    x0_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
    sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
    prev_sample = x0_coeff * x0 + sample_coeff * sample
    if t > 0:
        noise = noise.to(model_output.dtype)
        if scheduler.variance_type == "fixed_small_log":
            variance = scheduler._get_variance(t) * noise
        else:
            variance = (scheduler._get_variance(t) ** 0.5) * noise
        prev_sample = prev_sample + variance
    return prev_sample


class AncestralNoise:
    """DDPM's per-step noise for a batch, drawn on the pipeline's device, ``DDPM_NOISE_CHUNK_STEPS`` steps at a time.

    ``noise[i]`` is step ``i``'s noise ``[batch, frames, channels]``. With one generator per clip, each clip gets
    its own generator on ``device``, seeded by one 63-bit integer drawn from the clip's given generator (after its
    starting noise), and its noise is drawn at the model's full length ``[chunk steps, full_frames, channels]``
    per call, then cropped like the latents: a clip's noise depends only on its generator and the number of
    steps, never on its batch, its neighbours' lengths or the chunk the protocol generates it in. With one
    generator (or none: torch's default one) the batch shares one device generator seeded the same way.

    Drawing on the device is what makes the 1000-step sampler run at the GPU's speed: diffusers' own draw inside
    ``DDPMScheduler.step`` with per-clip CPU generators makes and copies ``batch`` host tensors every step. The
    device's stream differs from the CPU's: the same seed gives other (equally distributed) noise on CUDA and CPU.
    """

    def __init__(self, generator, batch: int, steps: int, full_frames: int, channels: int, run_frames: int,
                 device: torch.device, chunk_steps: int = DDPM_NOISE_CHUNK_STEPS) -> None:  # fmt: skip
        device = torch.device(device)
        self.per_clip = isinstance(generator, list)
        if self.per_clip and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} motions (give one, or one per motion)")
        sources = generator if self.per_clip else [generator]
        self.generators = [torch.Generator(device=device).manual_seed(_derived_seed(g)) for g in sources]
        self.batch, self.steps, self.chunk_steps = batch, steps, chunk_steps
        self.shape, self.run_frames, self.device = (full_frames, channels), run_frames, device
        self._chunk, self._values = -1, None

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> torch.Tensor:
        chunk = step // self.chunk_steps
        if chunk != self._chunk:
            self._values = None  # (freed before the next chunk is drawn)
            self._values = self._draw(chunk)
            self._chunk = chunk
        return self._values[:, step - chunk * self.chunk_steps, : self.run_frames]

    def _draw(self, chunk: int) -> torch.Tensor:
        count = min(self.chunk_steps, self.steps - chunk * self.chunk_steps)
        if not self.per_clip:  # one draw for the batch
            return torch.randn((self.batch, count, *self.shape), generator=self.generators[0], device=self.device)
        values = torch.empty((self.batch, count, *self.shape), device=self.device)
        for clip, generator in enumerate(self.generators):  # a contiguous block per clip: as torch.randn draws it
            values[clip].normal_(generator=generator)
        return values


def _derived_seed(generator: torch.Generator | None) -> int:
    """One 63-bit seed drawn from ``generator`` (torch's default CPU generator when None)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=device).item())


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor, rescale: float) -> torch.Tensor:
    """Pull a guided prediction's spread back towards the conditional one's (``guidance_rescale``).

    Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed" (WACV 2024), eq. 15-16, as
    diffusers' ``rescale_noise_cfg``, but the standard deviation of each clip is taken over its valid frames
    only, so padding never changes a clip. Guidance extrapolates ``cond - uncond``; with a deterministic
    sampler the result is over-dispersed (docs/BENCHMARKS.md); ``rescale`` in [0, 1] blends in the rescaled
    prediction.
    """
    weights = mask[..., None].to(guided.dtype)
    count = weights.sum(dim=(1, 2)).clamp_min(1.0) * guided.shape[-1]

    def spread(x: torch.Tensor) -> torch.Tensor:
        mean = (x * weights).sum(dim=(1, 2)) / count
        return ((x - mean[:, None, None]).square() * weights).sum(dim=(1, 2)).div(count).sqrt()

    ratio = (spread(cond) / spread(guided).clamp_min(1e-6))[:, None, None]
    return rescale * guided * ratio + (1.0 - rescale) * guided


class Express4DMDMPipeline(ModelCardMixin, DiffusionPipeline):
    """Generate ARKit facial motion from text with an MDM denoiser.

    >>> import torch
    >>> pipe = Express4DMDMPipeline.from_components(MDMDenoiser.from_preset("tiny"))  # untrained: noise
    >>> out = pipe(["A person is smiling", "A person blinks"], num_frames=[40, 25], num_inference_steps=3,
    ...            generator=torch.Generator().manual_seed(0))
    >>> [(m.num_frames, m.fps, m.caption) for m in out.motions]
    [(40, 20.0, 'A person is smiling'), (25, 20.0, 'A person blinks')]
    """

    model_cpu_offload_seq = "text_encoder->denoiser"
    #: what ``callback_on_step_end_tensor_inputs`` may name: ``latents`` (x_t after the step, normalised, ``[B, T, 61]``),
    #: ``x0`` (the guided clean-motion prediction of the step), ``states`` (text embeddings of the branches),
    #: ``mask`` (valid frames). A callback may return a new ``latents``.
    _callback_tensor_inputs = ["latents", "x0", "states", "mask"]
    CARD_TEMPLATE = "model_card_mdm.md"  # save_pretrained writes it as README.md (ModelCardMixin)
    CARD_TAGS = ("express4d", "facial-animation", "text-to-motion", "arkit", "blendshapes", "mdm", "diffusion")

    def __init__(self, denoiser: MDMDenoiser, scheduler, text_encoder, tokenizer, normalizer: MotionNormalizer):
        super().__init__()
        denoiser.eval()  # a pipeline samples: no dropout (from_pretrained loads in eval mode too)
        self.register_modules(
            denoiser=denoiser,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            normalizer=normalizer,
        )
        self.set_progress_bar_config(leave=False)
        self._fast_sampling = False  # enable_fast_sampling(): replay recorded CUDA graphs
        self._fast_device: torch.device | None = None  # the execution device, cached by enable_fast_sampling
        self._parameter_lists: dict[str, tuple] = {}  # component name -> (module, its parameters), for graph keys
        self._graphs = GraphCache(MAX_CACHED_GRAPHS)  # recorded text encoders and sampling loops

    # -- fast sampling -----------------------------------------------------------------------------------
    def enable_fast_sampling(self, dtype: torch.dtype | None = None, compile: bool = False) -> Express4DMDMPipeline:
        """Sample fast on a GPU: a bf16 denoiser and the whole sampling loop replayed as one CUDA graph.

        Call it after moving the pipeline to its device (``pipe.to("cuda").enable_fast_sampling()``).
        With a replayable scheduler (DDIM, DPM-Solver++; see :func:`is_replayable`) on CUDA, the first
        call of each shape (batch size, steps, scheduler) runs the loop once and records it; later calls copy
        their noise and text into the recording and replay it. The text encoder is recorded too (prompts
        padded to 64 tokens, or CLIP's 77 in CLIP mode), per batch size. Clips are then padded to the model's full
        length (196 frames) so that one recording serves every mix of lengths; the key-padding mask keeps
        each clip's result independent of the padding. DDPM's ancestral sampler runs eagerly, in ``dtype``.

        Args:
            dtype: the denoiser's dtype; default bf16 on CUDA (where supported), unchanged elsewhere.
            compile: also ``torch.compile`` the denoiser (fused kernels; the first call per shape compiles
                for about a minute).

        The cast stays: ``save_pretrained`` then writes bf16 weights (``pipe.to(torch.float32)`` first to avoid it).
        Casts, moves and swapped components are noticed and re-recorded; after replacing parameter objects in
        place (``load_state_dict(..., assign=True)``) call ``enable_fast_sampling`` again.
        Calls must not overlap on one pipeline (a recording has one set of input buffers).
        """
        device = self._execution_device
        if dtype is None and device.type == "cuda" and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        if dtype is not None:  # (nn.Module.to: diffusers' ModelMixin.to warns on every dtype cast)
            torch.nn.Module.to(self.denoiser, dtype)
        if compile:
            self.denoiser.compile(dynamic=False)
        self._fast_sampling = True
        self._fast_device = device
        self._parameter_lists.clear()
        self._graphs.clear()
        return self

    def disable_fast_sampling(self) -> Express4DMDMPipeline:
        """Back to the eager loop: frees the recorded graphs and drops the compiled denoiser (its dtype stays:
        ``pipe.to(torch.float32)`` casts back)."""
        self._fast_sampling = False
        self._fast_device = None
        self._parameter_lists.clear()
        self.denoiser._compiled_call_impl = None  # undo nn.Module.compile
        self._graphs.clear()
        return self

    @property
    def _execution_device(self) -> torch.device:
        # diffusers' property scans every submodule for offloading hooks (about 1 ms a call, twice per call: a
        # fifth of a replayed batch-1 sample). On the fast path the device is cached, and trusted while the
        # denoiser's weights are on it (with CPU offloading they are not, and the full scan runs).
        cached = getattr(self, "_fast_device", None)  # (unset while __init__ registers the components)
        if cached is not None and next(self.denoiser.parameters()).device == cached:
            return cached
        return super()._execution_device

    def _weights_key(self, name: str) -> tuple[int, ...]:
        """Storage addresses of component ``name``'s weights, part of a recording's key (a cast or a reload
        moves them). The parameter list is cached per module object: walking it costs more than reading it."""
        module = getattr(self, name)
        cached = self._parameter_lists.get(name)
        if cached is None or cached[0] is not module:
            cached = self._parameter_lists[name] = (module, tuple(module.parameters()))
        return weight_pointers(cached[1])

    def _replays(self, device: torch.device) -> bool:
        return self._fast_sampling and device.type == "cuda" and is_replayable(self.scheduler)

    @classmethod
    def from_components(
        cls,
        denoiser: MDMDenoiser,
        normalizer: MotionNormalizer | None = None,
        text_encoder_name_or_path: str | None = None,
        scheduler=None,
        text_encoder=None,
        tokenizer=None,
    ) -> Express4DMDMPipeline:
        """Assemble a pipeline with defaults: DDPM training schedule, MiniLM text encoder, identity normaliser."""
        if text_encoder is None or tokenizer is None:
            tokenizer, text_encoder = load_text_encoder(text_encoder_name_or_path)
        return cls(
            denoiser=denoiser,
            scheduler=scheduler if scheduler is not None else default_scheduler(denoiser.config.num_train_timesteps),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            normalizer=normalizer if normalizer is not None else MotionNormalizer(),
        )

    # -- text ------------------------------------------------------------------------------------------
    @property
    def uses_text_tokens(self) -> bool:
        """True when the denoiser is the order-aware variant (it attends to the token states)."""
        return getattr(self.denoiser.config, "text_conditioning", "pooled") == "tokens"

    @torch.no_grad()
    def encode_text(self, prompts: list[str], return_tokens: bool = False) -> torch.Tensor | TextEncoding:
        """Pooled float32 text embeddings ``[len(prompts), D]`` on the execution device; with
        ``return_tokens`` the whole :class:`~express4d_hf.models.text.TextEncoding` (pooled, token states, mask)."""
        device = self.text_encoder.device
        if self._fast_sampling and device.type == "cuda":  # one recording per batch size: fixed-length tokens
            tokens = self._recorded_text_tokens(prompts, device)
            key = ("text", return_tokens, tuple(tokens["input_ids"].shape), self._weights_key("text_encoder"))
            if return_tokens:  # the order-aware denoiser's token states come out of the recording too
                pooled, states = self._graphs.run(key, self._recorded_text_encoder_with_tokens, tokens)
                encoding = TextEncoding(pooled, states, tokens["attention_mask"].bool())
            else:
                pooled = self._graphs.run(key, self._recorded_text_encoder, tokens)
                encoding = TextEncoding(pooled, pooled[:, None], torch.ones_like(pooled[:, :1], dtype=torch.bool))
        else:
            encoding = encode_prompts(self.tokenizer, self.text_encoder, prompts)
        if encoding.pooled.shape[-1] != self.denoiser.config.text_dim:
            raise ValueError(
                f"the text encoder gives {encoding.pooled.shape[-1]}-d embeddings but the denoiser expects "
                f"{self.denoiser.config.text_dim}; use the text encoder the model was trained with"
            )
        encoding = encoding.to(self._execution_device, torch.float32)
        return encoding if return_tokens else encoding.pooled

    def _recorded_text_tokens(self, prompts: list[str], device) -> dict[str, torch.Tensor]:
        """The fast path's fixed-length tokens: 64, or CLIP's whole 77-token context in CLIP mode."""
        return tokenize_prompts(self.tokenizer, prompts, device, prompt_max_tokens(self.text_encoder), fixed_length=True)

    def _recorded_text_encoder(self, **tokens: torch.Tensor) -> torch.Tensor:
        """What the fast path records: the pooled embedding (CLIP's ``encode_text`` in CLIP mode)."""
        return pool_token_states(self.text_encoder, **tokens)[0]

    def _recorded_text_encoder_with_tokens(self, **tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the fast path records for an order-aware denoiser: the pooled embedding and the token states."""
        encoding = pool_token_states(self.text_encoder, **tokens)
        return encoding.pooled, encoding.states

    # -- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int | list[int] | None = None,
        duration_s: float | list[float] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.5,
        guidance_rescale: float = 0.0,
        negative_prompt: str | list[str] | None = None,
        num_motions_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "motion",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        motion: FaceMotion | list[FaceMotion] | None = None,
        keep_channels=None,
        keep_frames=None,
        seam_blend_s: float = DEFAULT_SEAM_BLEND_S,
    ):
        """Generate one or more motions per prompt, or edit a performance (``motion`` with ``keep_*``).

        Args:
            prompt: a description ("A person is squinting and then smiling") or a list of them.
            num_frames: frames at 20 fps (20..196), one for all prompts or one per prompt.
            duration_s: alternatively, seconds (1..9.8), one or one per prompt. Default: 196 frames.
            num_inference_steps: denoising steps (<= the scheduler's training steps; 1000 for full DDPM).
            guidance_scale: classifier-free guidance ``uncond + s * (cond - uncond)``; 1 disables it
                (conditional only), 0 ignores the text.
            guidance_rescale: blend in the guided prediction rescaled to the conditional one's spread
                (:func:`rescale_guidance`; 0 = plain guidance, diffusers' ``guidance_rescale``).
            negative_prompt: text to steer away from (replaces the empty condition of the unconditional branch).
            num_motions_per_prompt: samples per prompt (outputs are prompt-major).
            eta: DDIM only: the share of fresh noise per step (0 = deterministic DDIM, 1 = as much as DDPM).
                Deterministic samplers with guidance overshoot the data's diversity; a little noise pulls
                the distribution back towards the 1000-step sampler's (docs/BENCHMARKS.md).
            generator: a ``torch.Generator`` (or one per output motion) for reproducible sampling.
            latents: initial noise ``[num_prompts * num_motions_per_prompt, max(num_frames), 61]``.
            output_type: ``"motion"`` -> :class:`MotionPipelineOutput` of :class:`FaceMotion` (raw ARKit
                values, 20 fps, caption and length exact); ``"pt"``/``"np"`` -> :class:`MotionBatchOutput`
                with the raw padded batch (tensor / array); ``"latent"`` -> the same with normalised values.
                Frames past each length are removed ("motion") or zero (the others).
            return_dict: False returns a tuple ``(motions,)`` (plus lengths for the batch types).
            callback_on_step_end: diffusers' step callback, ``callback(pipe, step_index, timestep, callback_kwargs)
                -> dict``, called after every denoising step (or a ``PipelineCallback``); a returned ``"latents"``
                replaces the current ones, and setting ``pipe._interrupt = True`` skips the remaining steps. It runs
                on the eager loop: with :meth:`enable_fast_sampling`, a call that has a callback is not replayed
                from the CUDA graph (later calls without one are).
            callback_on_step_end_tensor_inputs: the names put in ``callback_kwargs`` (default ``["latents"]``),
                any of :attr:`_callback_tensor_inputs`.
            motion: edit this source performance (any fps; resampled to the model's 20 fps), or one per prompt.
                The output length defaults to the source's (at most 196 frames); a longer output continues it.
                Frames where the source lost tracking (``motion.valid`` False) are generated, never kept.
            keep_channels: channels kept from ``motion`` on every frame it covers: a region of
                ``arkit.REGIONS`` (``"upper_face"``, ``"lower_face"``, ``"eyes"``, ``"mouth"``, ...), a list of
                region or channel names, or a bool mask ``[frames, 61]``. The rest follows the prompt.
            keep_frames: ``(start_s, end_s)`` spans kept from ``motion`` on every channel (in-betweening;
                continuation when only a prefix is kept), or a string ``"0-1,3-4"``.
            seam_blend_s: next to each kept span the generated frames are pulled towards the source along a
                raised-cosine ramp of this many seconds (0 = a hard mask), so seams do not jump.

        Editing is MDM's inpainting inside the sampling loop: at every step the kept parts of the predicted clean
        motion are replaced by the (normalised) source, so the sampler carries the source, noised to the step's
        level, through the loop (for DDIM exactly ``sqrt(a_t) * source + sqrt(1 - a_t) * starting noise``) and the
        denoiser generates the rest around it; the output is the source on kept parts (pasted in raw values at
        the end) and the generation elsewhere, joined by the ramps. It works on the eager and on the recorded
        (CUDA-graph) path, where the source and weights are inputs of the recording.
        """
        prompts = check_prompts(prompt)
        callback_names = check_step_callback(self, callback_on_step_end, callback_on_step_end_tensor_inputs or ["latents"])
        fps = float(self.normalizer.config.fps)
        edit_sources = None
        if motion is not None:
            edit_sources = [motion] * len(prompts) if isinstance(motion, FaceMotion) else list(motion)
            if len(edit_sources) != len(prompts):
                raise ValueError(f"got {len(edit_sources)} source motions for {len(prompts)} prompts (give one, or one per prompt)")
            if num_frames is None and duration_s is None:
                num_frames = [_source_frames(m, fps) for m in edit_sources]
        elif keep_channels is not None or keep_frames is not None:
            raise ValueError("`keep_channels` / `keep_frames` need the source performance: pass `motion=` (a FaceMotion)")
        lengths = resolve_num_frames(len(prompts), num_frames, duration_s, default=MAX_FRAMES, fps=fps)
        guidance_scale = check_guidance_scale(guidance_scale)
        max_steps = int(self.scheduler.config.num_train_timesteps)
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= max_steps:
            raise ValueError(
                f"`num_inference_steps` must be an integer in [1, {max_steps}], got {num_inference_steps!r}"
            )
        if not isinstance(num_motions_per_prompt, int) or num_motions_per_prompt < 1:
            raise ValueError(f"`num_motions_per_prompt` must be a positive integer, got {num_motions_per_prompt!r}")
        if not isinstance(guidance_rescale, (int, float)) or not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"`guidance_rescale` must be a number in [0, 1], got {guidance_rescale!r}")
        if not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"`eta` must be a number in [0, 1], got {eta!r}")
        if eta and not isinstance(self.scheduler, DDIMScheduler):
            raise ValueError(
                f"`eta` applies to DDIM; this pipeline samples with {type(self.scheduler).__name__}. Swap in DDIM "
                "with `pipe.scheduler = make_scheduler('ddim', pipe.scheduler.config)` or leave eta at 0"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        negatives = None
        if negative_prompt is not None:
            negatives = check_prompts(
                [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
            )
            if len(negatives) != len(prompts):
                raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")

        plans = None
        if edit_sources is not None:
            # One plan per distinct (source, length): a batch that edits one take for many prompts resamples it once.
            distinct: dict[tuple[int, int], Any] = {}
            for m, n in zip(edit_sources, lengths):
                if (id(m), n) not in distinct:
                    distinct[id(m), n] = prepare_edit(m, n, fps, keep_channels, keep_frames, seam_blend_s)
            plans = [distinct[id(m), n] for m, n in zip(edit_sources, lengths)]

        device = self._execution_device
        repeat = num_motions_per_prompt
        captions = [p for p in prompts for _ in range(repeat)]
        lengths = [n for n in lengths for _ in range(repeat)]
        batch, frames, channels = len(captions), max(lengths), self.denoiser.config.num_channels
        full_frames = max(frames, self.denoiser.config.max_frames)
        replay = self._replays(device) and callback_on_step_end is None  # a callback sees every step: eager loop
        self._interrupt = False
        run_frames = full_frames if replay else frames  # a recorded loop has one shape: the model's full length
        mask = lengths_mask(lengths, run_frames, device=device)

        tokens_mode = self.uses_text_tokens

        def encode(texts: list[str]) -> TextEncoding:
            if tokens_mode:
                return self.encode_text(texts, return_tokens=True).repeat_interleave(repeat)
            pooled = self.encode_text(texts).repeat_interleave(repeat, dim=0)  # the token states are not needed
            return TextEncoding(pooled, pooled[:, None], torch.ones_like(pooled[:, :1], dtype=torch.bool))

        cond = encode(prompts)
        # No negative prompt: zero vector and every token masked (the denoiser drops the text, as in training).
        uncond = TextEncoding.empty_like(cond) if negatives is None else encode(negatives)
        uncond_drop = torch.full((batch,), negatives is None, device=device)
        no_drop = torch.zeros(batch, dtype=torch.bool, device=device)
        if guidance_scale == 1.0:  # conditional only
            branch, branch_drop, branch_mask = cond, no_drop, mask
        elif guidance_scale == 0.0:  # unconditional only
            branch, branch_drop, branch_mask = uncond, uncond_drop, mask
        else:  # classifier-free guidance: both branches in one batched forward
            branch = TextEncoding.cat([cond, uncond])
            branch_drop = torch.cat([no_drop, uncond_drop])
            branch_mask = torch.cat([mask, mask])
        branch_states = branch.pooled

        shape = (batch, frames, channels)
        if latents is None:
            # Drawn at the model's full length, then cropped: a clip's starting noise does not depend on
            # the longest clip of its batch (with one generator per clip it does not depend on the batch at all).
            latents = randn_tensor((batch, full_frames, channels), generator=generator, device=device,
                                   dtype=torch.float32)[:, :run_frames]  # fmt: skip
        else:
            if tuple(latents.shape) != shape:
                raise ValueError(
                    f"`latents` must have shape {shape} (motions, longest length, channels), got {tuple(latents.shape)}"
                )
            latents = F.pad(latents.to(device=device, dtype=torch.float32), (0, 0, 0, run_frames - frames))
        # Host-side timesteps: the schedulers' bookkeeping (step index, alphas) then needs no GPU round trip.
        self.scheduler.set_timesteps(num_inference_steps)
        latents = latents * self.scheduler.init_noise_sigma
        inputs = dict(latents=latents, states=branch_states, drop=branch_drop, mask=branch_mask)
        if plans is not None:  # inpainting: the normalised source and its weights, padded like the latents
            # Filled on the host and copied once (a copy per clip costs more than the edit's whole GPU work).
            host = np.zeros((2, batch, run_frames, channels), dtype=np.float32)
            for i, plan in enumerate(p for p in plans for _ in range(repeat)):
                host[0, i, : len(plan.source)] = plan.source
                host[1, i, : len(plan.source)] = plan.weights
            source_raw, weights = torch.from_numpy(host).to(device)
            inputs["source"] = self.normalizer.normalize(source_raw).float() * mask[..., None]
            inputs["weights"] = weights
        if tokens_mode:  # the order-aware denoiser's token states (inputs of a recorded loop, like the rest)
            inputs.update(tokens=branch.states, token_mask=branch.mask)
        step_kwargs = {"eta": float(eta)} if eta else {}
        if takes_step_noise(self.scheduler, eta):  # drawn up front per clip, like the initial noise
            steps = len(self.scheduler.timesteps)
            noise = randn_tensor((batch, steps, full_frames, channels), generator=generator, device=device,
                                 dtype=torch.float32)  # fmt: skip
            inputs["noise"] = noise[:, :, :run_frames].transpose(0, 1)
        elif not replay and draws_ancestral_noise(self.scheduler):  # DDPM: drawn per clip on the device
            inputs["noise"] = self._ancestral_noise(generator, batch, full_frames, channels, run_frames, device)
        elif not replay and "generator" in _step_parameters(self.scheduler):  # drawn by diffusers in step()
            step_kwargs["generator"] = generator
        if replay:
            latents = self._replay(num_inference_steps, guidance_scale, float(guidance_rescale), step_kwargs, **inputs)
        else:
            callback = (callback_on_step_end, callback_names) if callback_on_step_end is not None else None
            latents = self._denoise(guidance=guidance_scale, rescale=guidance_rescale, step_kwargs=step_kwargs,
                                    callback=callback, **inputs)  # fmt: skip
        latents, mask = latents[:, :frames], mask[:, :frames]

        keep = mask[..., None].to(latents.dtype)
        normalised = latents * keep
        raw = self.normalizer.denormalize(latents) * keep  # in float32 whatever the components' dtype
        if plans is not None:  # the final paste, in raw values: kept parts are the source itself
            weights, source_raw = inputs["weights"][:, :frames], source_raw[:, :frames]
            raw = raw + weights * (source_raw - raw)
            normalised = normalised + weights * (inputs["source"][:, :frames] - normalised)
        if self._fast_device is None or getattr(self, "_all_hooks", None):  # (no hooks to reset on the fast path)
            self.maybe_free_model_hooks()

        if output_type == "motion":
            metadata = {
                "generator": "Express4DMDMPipeline", "scheduler": type(self.scheduler).__name__,
                "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "guidance_rescale": float(guidance_rescale), "eta": float(eta),
            }  # fmt: skip
            if plans is not None:
                metadata["edit"] = _edit_metadata(keep_channels, keep_frames, seam_blend_s)
            motions = to_face_motions(raw, lengths, captions, fps=fps, **metadata)
            return MotionPipelineOutput(motions=motions) if return_dict else (motions,)
        values = normalised if output_type == "latent" else raw
        values = values.cpu().numpy() if output_type == "np" else values
        if not return_dict:
            return values, lengths
        return MotionBatchOutput(motions=values, lengths=lengths, captions=captions, fps=fps)

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` in a step callback to skip the remaining denoising steps (diffusers' way)."""
        return bool(getattr(self, "_interrupt", False))

    def _ancestral_noise(self, generator, batch: int, full_frames: int, channels: int, run_frames: int,
                         device: torch.device) -> AncestralNoise:  # fmt: skip
        """DDPM's per-step noise (:class:`AncestralNoise`), drawn from ``generator`` after the starting noise."""
        return AncestralNoise(generator, batch, len(self.scheduler.timesteps), full_frames, channels, run_frames, device)

    def _denoise(self, latents, states, drop, mask, guidance, rescale=0.0, noise=None, step_kwargs=None,
                 progress=True, callback=None, source=None, weights=None, tokens=None,
                 token_mask=None) -> torch.Tensor:  # fmt: skip
        """The sampling loop over ``self.scheduler.timesteps`` (host tensors); ``guidance`` is a float or a 0-d
        tensor, ``rescale`` the guidance rescale; ``noise`` ``[steps, B, T, C]`` is the per-step noise of
        :func:`takes_step_noise` samplers, or DDPM's :class:`AncestralNoise` (then the step is
        :func:`ddpm_step_with_noise`); ``step_kwargs`` go to ``scheduler.step``; ``callback`` is
        ``(callback_on_step_end, tensor input names)`` (eager loop only). With ``source`` and
        ``weights`` ``[B, T, C]`` (an edit), every step's clean prediction becomes
        ``x0 + weights * (source - x0)`` before the scheduler step (MDM's inpainting). ``tokens`` /
        ``token_mask`` are the text token states of an order-aware denoiser."""
        batch = latents.shape[0]
        guided = states.shape[0] != batch  # classifier-free guidance: both branches in one forward
        timesteps = self.scheduler.timesteps
        step_kwargs = step_kwargs or {}
        text = {}
        if tokens is not None:  # the text is the same at every step: its keys and values are computed once
            text["text_memory"] = self.denoiser.text_memory(tokens, token_mask, drop)
        for i, t in enumerate(self.progress_bar(timesteps) if progress else timesteps):
            if callback is not None and self.interrupt:
                continue
            model_input = self.scheduler.scale_model_input(latents, t)
            if guided:
                model_input = torch.cat([model_input, model_input])
            step = torch.full((model_input.shape[0],), int(t), device=latents.device, dtype=torch.long)
            x0 = self.denoiser(model_input, step, states, frame_mask=mask, cond_drop_mask=drop, **text).float()
            if guided:
                x0_cond, x0_uncond = x0.chunk(2)
                x0 = x0_uncond + guidance * (x0_cond - x0_uncond)
                if rescale:
                    x0 = rescale_guidance(x0, x0_cond, mask[:batch], rescale)
            if source is not None:
                x0 = torch.lerp(x0, source, weights)
            if isinstance(noise, AncestralNoise):
                latents = ddpm_step_with_noise(self.scheduler, x0, t, latents, noise[i])
            else:
                if noise is not None:
                    step_kwargs = {**step_kwargs, "variance_noise": noise[i]}
                latents = self.scheduler.step(x0, t, latents, **step_kwargs).prev_sample
            if callback is not None:
                values = {"latents": latents, "x0": x0, "states": states, "mask": mask[:batch]}
                outputs = call_step_callback(self, callback[0], i, t, callback[1], values)
                latents = outputs.pop("latents", latents)
        return latents

    def _replay(self, num_inference_steps: int, guidance_scale: float, rescale: float, step_kwargs: dict,
                **inputs: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Run the loop through its CUDA graph, recording it on the first call of this shape."""
        key = ("loop", type(self.scheduler).__name__, json.dumps(dict(self.scheduler.config), sort_keys=True, default=str),
               num_inference_steps, rescale, json.dumps(step_kwargs, sort_keys=True),
               tuple((name, tuple(value.shape)) for name, value in inputs.items()),
               self._weights_key("denoiser"))  # fmt: skip

        def loop(latents, states, drop, mask, guidance, noise=None, source=None, weights=None, tokens=None,
                 token_mask=None) -> torch.Tensor:  # fmt: skip
            self.scheduler.set_timesteps(num_inference_steps)
            return self._denoise(latents, states, drop, mask, guidance, rescale, noise, step_kwargs, progress=False,
                                 source=source, weights=weights, tokens=tokens, token_mask=token_mask)  # fmt: skip

        guidance = torch.tensor(float(guidance_scale), device=inputs["latents"].device)  # an input: any value replays
        return self._graphs.run(key, loop, {**inputs, "guidance": guidance})

    def compose(
        self,
        timeline: list[tuple[str, float]],
        transition_s: float = DEFAULT_TRANSITION_S,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> FaceMotion:
        """One performance of several instructions in a row, as long as you like: ``[(prompt, seconds), ...]``.

        The model sees at most 196 frames (9.8 s) at once, so the timeline is generated window by window. Each
        instruction gets its own windows (a long one several); every window after the first starts with the last
        ``transition_s`` seconds of what is already generated, kept as a prefix (:meth:`__call__` with
        ``keep_frames``: MDM's continuation by inpainting), so the new instruction picks up the face where the
        previous one left it and the joins have no seam. Windows shorter than the model's minimum (1 s) are
        generated at 1 s and cut.

        Args:
            timeline: ``(instruction, seconds)`` pairs, in order; each lasts ``seconds`` (> 0).
            transition_s: seconds of overlap kept from the previous window (0.25 to 4).
            generator: one generator for the whole timeline (windows draw from it in turn).
            **kwargs: sampling settings passed to every window (``num_inference_steps``, ``guidance_scale``,
                ``guidance_rescale``, ``eta``, ``negative_prompt``, ``seam_blend_s``).

        Returns:
            a :class:`FaceMotion` at 20 fps of exactly ``round(sum(seconds) * 20)`` frames; its caption joins the
            instructions, ``metadata["timeline"]`` lists each one's start and end in seconds and
            ``metadata["seams"]`` the frames where a window's generated part begins.
        """
        fps = float(self.normalizer.config.fps)
        segments = check_timeline(timeline)
        if not isinstance(transition_s, (int, float)) or not 0.25 <= transition_s <= 4.0:
            raise ValueError(f"`transition_s` must be a number of seconds in [0.25, 4], got {transition_s!r}")
        not_allowed = {"num_frames", "duration_s", "motion", "keep_channels", "keep_frames", "latents",
                       "num_motions_per_prompt", "output_type", "return_dict", "prompt"} & set(kwargs)  # fmt: skip
        if not_allowed:
            raise ValueError(f"compose sets {', '.join(sorted(not_allowed))} itself; pass only sampling settings")
        overlap = int(round(transition_s * fps))
        bounds = [int(b) for b in np.round(np.cumsum([0.0] + [seconds for _, seconds in segments]) * fps)]
        total = bounds[-1]
        values = np.zeros((0, self.denoiser.config.num_channels), dtype=np.float32)
        metadata: dict[str, Any] = {}
        seams: list[int] = []  # frames where a window's generated part starts
        for (prompt, _), start, end in zip(segments, bounds[:-1], bounds[1:]):
            while len(values) < end:
                prefix = min(overlap, len(values))
                chunk = min(end - len(values), MAX_FRAMES - prefix)
                frames = max(prefix + chunk, MIN_FRAMES)  # generated at least at the model's minimum, then cut
                call = dict(kwargs, num_frames=frames, generator=generator)
                if prefix:
                    call.update(motion=FaceMotion(values[-prefix:], fps=fps), keep_frames=[(0.0, prefix / fps)])
                window = self(prompt, **call).motions[0]
                metadata = {k: v for k, v in window.metadata.items() if k != "edit"}
                if len(values):
                    seams.append(len(values))
                values = np.concatenate([values, window.values[prefix : prefix + chunk]])
        timeline_meta = [{"prompt": p, "start_s": float(a / fps), "end_s": float(b / fps)}
                         for (p, _), a, b in zip(segments, bounds[:-1], bounds[1:])]  # fmt: skip
        metadata.update(timeline=timeline_meta, transition_s=float(transition_s), seams=seams)
        caption = " Then ".join(p.strip().rstrip(".") for p, _ in segments)
        assert len(values) == total
        return FaceMotion(values, fps=fps, caption=caption, metadata=metadata)

    # -- model card ------------------------------------------------------------------------------------
    def model_card_fields(self) -> dict[str, Any]:
        """Placeholders of ``express4d_hf/hub_cards/model_card_mdm.md``: architecture from the config, the rest from card_data."""
        cfg = self.denoiser.config
        params = sum(p.numel() for p in self.denoiser.parameters())
        fields: dict[str, Any] = {
            "model_name": "Express4D MDM baseline",
            "preset": "custom",
            "architecture": (
                f"{cfg.num_layers}-layer transformer encoder, width {cfg.hidden_size}, {cfg.num_heads} heads, "
                f"feed-forward {cfg.ff_size}, {cfg.activation.upper()}, dropout {cfg.dropout}"
                + (
                    f", {cfg.frames_per_token} frames per token"
                    if cfg.frames_per_token > 1
                    else ", one token per frame"
                )
                + (f", output smoothing (kernel {cfg.output_smoothing})" if cfg.output_smoothing else "")
                + ("" if cfg.get("norm_first", True) else ", post-norm layers")
                + ("" if cfg.get("final_layer_norm", True) else ", no final norm")
                + (", order-aware: every layer also attends to the text's token states"
                   if cfg.get("text_conditioning", "pooled") == "tokens" else "")
                + f"; {params / 1e6:.2f} M parameters"
            ),
            "text_encoder": type(self.text_encoder).__name__,
            "text_dim": cfg.text_dim,
            "scheduler": f"{type(self.scheduler).__name__} ({self.scheduler.config.num_train_timesteps} training steps, "
            f"{self.scheduler.config.beta_schedule}, prediction_type={self.scheduler.config.prediction_type})",
            "training_data": "not recorded",
            "training": "not recorded",
            "metrics": "Not evaluated yet: score it with the Express4D evaluation protocol (20 replications, 95% "
            "intervals), or train with `express4d train mdm --evaluator DIR` for a quick check.",
            "hardware": "not recorded",
        }
        fields.update({k: v for k, v in self.card_data.items() if v is not None})
        return fields


def check_timeline(timeline) -> list[tuple[str, float]]:
    """Validate ``[(prompt, seconds), ...]`` (or ``seconds, prompt`` lines already parsed) for :meth:`compose`."""
    try:
        segments = [(p, float(s)) for p, s in timeline]
    except (TypeError, ValueError):
        raise ValueError("a timeline is a list of (instruction, seconds) pairs, e.g. "
                         "[('A person is smiling', 3.0), ('A person is frowning', 2.5)]") from None  # fmt: skip
    if not segments:
        raise ValueError("the timeline is empty: give (instruction, seconds) pairs")
    check_prompts([p for p, _ in segments])
    for i, (prompt, seconds) in enumerate(segments):
        if not math.isfinite(seconds) or not 0.05 <= seconds <= MAX_TIMELINE_S:
            raise ValueError(f"timeline entry {i} ({prompt[:40]!r}) lasts {seconds:g} s; give 0.05 to {MAX_TIMELINE_S:g} s")
    if sum(s for _, s in segments) > MAX_TIMELINE_S:
        raise ValueError(f"the timeline lasts {sum(s for _, s in segments):g} s; the limit is {MAX_TIMELINE_S:g} s")
    return segments


def _source_frames(motion, fps: float) -> int:
    """Frames of a source motion at ``fps`` (the default output length of an edit), at most the model's window."""
    if not isinstance(motion, FaceMotion):
        raise ValueError(f"`motion` must be a FaceMotion (read one with read_livelink_csv), got {type(motion).__name__}")
    if math.isclose(fps, motion.fps):
        frames = motion.num_frames
    else:  # as FaceMotion.resample counts them
        frames = max(1, math.ceil(motion.num_frames * Fraction(fps / motion.fps).limit_denominator(1000)))
    if frames > MAX_FRAMES:
        raise ValueError(
            f"the source motion is {motion.duration:.2f} s, longer than the model's window ({MAX_FRAMES / fps:g} s): "
            "edit a part of it (motion.crop(start, stop)), or pass num_frames / duration_s"
        )
    return frames


def _edit_metadata(keep_channels, keep_frames, seam_blend_s: float) -> dict[str, Any]:
    """What an edit kept, JSON-friendly, for the output's metadata."""
    if keep_channels is None or isinstance(keep_channels, str):
        channels = keep_channels
    elif isinstance(keep_channels, (list, tuple)) and all(isinstance(k, str) for k in keep_channels):
        channels = list(keep_channels)
    else:
        channels = "mask"
    frames = keep_frames if keep_frames is None or isinstance(keep_frames, str) else [list(map(float, s)) for s in keep_frames]
    return {"keep_channels": channels, "keep_frames": frames, "seam_blend_s": float(seam_blend_s)}


def _step_parameters(scheduler) -> frozenset[str]:
    """Names ``scheduler.step`` accepts; looked up once per scheduler class (every call asks)."""
    return _step_parameters_of(type(scheduler))


@lru_cache(maxsize=None)
def _step_parameters_of(scheduler_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(scheduler_class.step).parameters)


__all__ = ["SCHEDULER_NAMES", "AncestralNoise", "Express4DMDMPipeline", "check_timeline", "ddpm_step_with_noise",
           "default_scheduler", "draws_ancestral_noise", "is_replayable", "make_scheduler", "rescale_guidance",
           "takes_step_noise"]
