"""``Express4DT2MGPTPipeline``: text -> facial motion with the T2M-GPT baseline (VQ-VAE + autoregressive GPT).

This is **not a diffusion model**: it is shipped in the diffusers pipeline format (``DiffusionPipeline``,
``model_index.json``, one sub-folder per component) so that it loads, saves and runs exactly like the MDM
baseline. Components:

- ``vqvae``: :class:`~express4d_hf.models.t2m_gpt.MotionVQVAE`, the motion tokenizer (4 frames per code);
- ``transformer``: :class:`~express4d_hf.models.t2m_gpt.T2MGPT`, which samples codes after a text token;
- ``text_encoder`` + ``tokenizer``: the frozen ``transformers`` encoder the GPT was trained with (default
  all-MiniLM-L6-v2, offline), mean-pooled into one vector per prompt;
- ``normalizer``: :class:`~express4d_hf.models.normalizer.MotionNormalizer`, the training stats.

Sampling is batched and incremental (key-value cache). A motion ends when the GPT emits its end token
(so the model chooses the length) unless ``num_frames`` forces one: the end token is then suppressed until
``ceil(num_frames / 4)`` codes exist and the decoded motion is cropped to exactly ``num_frames``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from ..core.constants import MAX_FRAMES, MIN_FRAMES
from ..core.motion import FaceMotion
from ..models.normalizer import MotionNormalizer
from ..models.t2m_gpt import T2MGPT, MotionVQVAE
from ..models.text import TextEncoding, encode_prompts, load_text_encoder
from .common import (
    ModelCardMixin,
    MotionBatchOutput,
    MotionPipelineOutput,
    call_step_callback,
    check_prompts,
    check_step_callback,
    lengths_mask,
    resolve_num_frames,
    to_face_motions,
)
from .editing import DEFAULT_SEAM_BLEND_S, parse_spans, prepare_edit

OUTPUT_TYPES = ("motion", "pt", "np", "latent", "codes")


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, vocab: int) -> None:
    """Raise a clear ``ValueError`` for sampling settings that cannot work."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"`temperature` must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab):
        raise ValueError(f"`top_k` must be None or an integer in [1, {vocab}], got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"`top_p` must be None or a number in (0, 1], got {top_p!r}")


class Express4DT2MGPTPipeline(ModelCardMixin, DiffusionPipeline):
    """Generate ARKit facial motion from text with T2M-GPT (a VQ-VAE + autoregressive transformer).

    >>> import torch
    >>> pipe = Express4DT2MGPTPipeline.from_components(MotionVQVAE.from_preset("tiny"),
    ...                                                T2MGPT.from_preset("tiny", num_codes=128))  # untrained
    >>> out = pipe(["A person is smiling", "A person blinks"], num_frames=[40, 25],
    ...            generator=torch.Generator().manual_seed(0))
    >>> [(m.num_frames, m.fps, m.caption) for m in out.motions]
    [(40, 20.0, 'A person is smiling'), (25, 20.0, 'A person blinks')]
    """

    model_cpu_offload_seq = "text_encoder->transformer->vqvae"
    #: what ``callback_on_step_end_tensor_inputs`` may name: ``tokens`` (the codes so far, ``[B, n]``), ``finished``
    #: (rows that emitted their end token or reached their length) and ``lengths`` (codes per row once finished).
    _callback_tensor_inputs = ["tokens", "finished", "lengths"]
    CARD_TEMPLATE = "model_card_t2m_gpt.md"
    CARD_TAGS = ("express4d", "facial-animation", "text-to-motion", "arkit", "blendshapes", "t2m-gpt", "vq-vae")

    def __init__(self, vqvae: MotionVQVAE, transformer: T2MGPT, text_encoder, tokenizer, normalizer: MotionNormalizer):
        super().__init__()
        if transformer is not None and vqvae is not None and transformer.config.num_codes != vqvae.config.num_codes:
            raise ValueError(
                f"the transformer speaks {transformer.config.num_codes} codes but the VQ-VAE has "
                f"{vqvae.config.num_codes}; pair a GPT with the tokenizer it was trained on"
            )
        self.register_modules(
            vqvae=vqvae, transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer, normalizer=normalizer
        )

    @classmethod
    def from_components(
        cls,
        vqvae: MotionVQVAE,
        transformer: T2MGPT,
        normalizer: MotionNormalizer | None = None,
        text_encoder_name_or_path: str | None = None,
        text_encoder=None,
        tokenizer=None,
    ) -> Express4DT2MGPTPipeline:
        """Assemble a pipeline with defaults: MiniLM text encoder (offline), identity normaliser."""
        if text_encoder is None or tokenizer is None:
            tokenizer, text_encoder = load_text_encoder(text_encoder_name_or_path)
        return cls(
            vqvae=vqvae.eval(),
            transformer=transformer.eval(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            normalizer=normalizer if normalizer is not None else MotionNormalizer(),
        )

    @property
    def frames_per_code(self) -> int:
        return self.vqvae.downsample

    # -- text ------------------------------------------------------------------------------------------
    @property
    def uses_text_tokens(self) -> bool:
        """True when the transformer is the order-aware variant (it attends to the token states)."""
        return getattr(self.transformer.config, "text_conditioning", "pooled") == "tokens"

    @torch.no_grad()
    def encode_text(self, prompts: list[str], return_tokens: bool = False) -> torch.Tensor | TextEncoding:
        """Pooled float32 text embeddings ``[len(prompts), D]`` on the execution device; with
        ``return_tokens`` the whole :class:`~express4d_hf.models.text.TextEncoding` (pooled, token states, mask)."""
        encoding = encode_prompts(self.tokenizer, self.text_encoder, prompts)
        if encoding.pooled.shape[-1] != self.transformer.config.text_dim:
            raise ValueError(
                f"the text encoder gives {encoding.pooled.shape[-1]}-d embeddings but the transformer expects "
                f"{self.transformer.config.text_dim}; use the text encoder the model was trained with"
            )
        encoding = encoding.to(self._execution_device, torch.float32)
        return encoding if return_tokens else encoding.pooled

    # -- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        max_num_frames: int = MAX_FRAMES,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_frames: int | list[int] | None = None,
        num_motions_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "motion",
        return_dict: bool = True,
        duration_s: float | list[float] | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        motion: FaceMotion | None = None,
        keep_frames=None,
        seam_blend_s: float = DEFAULT_SEAM_BLEND_S,
    ):
        """Generate one or more motions per prompt, or continue a performance from its first seconds.

        Args:
            prompt: a description ("A person is squinting and then smiling") or a list of them.
            max_num_frames: longest motion when the model picks the length (20..196 frames at 20 fps);
                a motion ends at the GPT's end token, rounded to whole codes (4 frames), at least 20 frames.
            temperature: softmax temperature of code sampling (0 = greedy, deterministic).
            top_k: sample only among the ``top_k`` most likely tokens.
            top_p: nucleus sampling: the smallest token set with probability >= ``top_p``.
            num_frames: force the length (20..196), one for all prompts or one per prompt: the end token is
                suppressed until enough codes exist, and the motion is cropped to exactly this many frames.
            num_motions_per_prompt: samples per prompt (outputs are prompt-major).
            generator: a ``torch.Generator`` or one per output motion (per-motion generators make each
                motion independent of the batch it is generated in).
            output_type: ``"motion"`` -> :class:`MotionPipelineOutput` of :class:`FaceMotion` (raw ARKit values,
                20 fps, caption attached); ``"pt"``/``"np"``/``"latent"`` -> :class:`MotionBatchOutput` (raw /
                raw numpy / normalised padded batch, zero past each length); ``"codes"`` -> a list of the
                sampled code tensors.
            return_dict: False returns a tuple ``(motions,)`` (plus lengths for the batch types).
            duration_s: alternatively to ``num_frames``, force the length in seconds (1..9.8), one or one per prompt.
            callback_on_step_end: diffusers' step callback, ``callback(pipe, step_index, timestep, callback_kwargs)
                -> dict``, called after every generated token (``timestep`` is the token index too; there is no
                noise level); ``callback_kwargs["tokens"]`` holds the tokens so far. Returning new ``"tokens"``
                (same shape) steers the rest of the sampling; setting ``pipe._interrupt = True`` ends every motion
                at the tokens it has.
            callback_on_step_end_tensor_inputs: the names put in ``callback_kwargs`` (default ``["tokens"]``), any of
                :attr:`_callback_tensor_inputs`.
            motion: continue this performance (any fps; resampled to 20 fps) with ``keep_frames=[(0, seconds)]``:
                its first ``seconds`` are encoded into codes (whole codes of 4 frames), the GPT continues them
                after the prompt's text token, and the output starts with exactly those seconds of the source,
                joined to the continuation by a ``seam_blend_s`` ramp. Only a prefix can be kept: the GPT writes
                codes left to right over all channels at once, so keeping channels or a later span (in-betweening)
                is the MDM pipeline's job. Give ``num_frames`` / ``duration_s`` longer than the prefix.
            keep_frames: the kept prefix, ``[(0, seconds)]`` or ``"0-2"``.
            seam_blend_s: seconds of raised-cosine ramp after the prefix (0 = a hard cut).
        """
        prompts = check_prompts(prompt)
        callback_names = check_step_callback(self, callback_on_step_end, callback_on_step_end_tensor_inputs or ["tokens"])
        fps = float(self.normalizer.config.fps)
        per_code = self.frames_per_code
        if isinstance(max_num_frames, bool) or not isinstance(max_num_frames, int) or not MIN_FRAMES <= max_num_frames <= MAX_FRAMES:
            raise ValueError(f"`max_num_frames` must be an integer in [{MIN_FRAMES}, {MAX_FRAMES}], got {max_num_frames!r}")
        forced = None
        if num_frames is not None or duration_s is not None:
            forced = resolve_num_frames(len(prompts), num_frames, duration_s, fps=fps)
        check_sampling(temperature, top_k, top_p, self.transformer.config.num_codes + 1)
        if isinstance(num_motions_per_prompt, bool) or not isinstance(num_motions_per_prompt, int) or num_motions_per_prompt < 1:
            raise ValueError(f"`num_motions_per_prompt` must be a positive integer, got {num_motions_per_prompt!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")

        repeat = num_motions_per_prompt
        captions = [p for p in prompts for _ in range(repeat)]
        if isinstance(generator, (list, tuple)) and len(generator) != len(captions):
            raise ValueError(f"got {len(generator)} generators for {len(captions)} motions (prompts x num_motions_per_prompt)")
        if forced is not None:
            forced = [n for n in forced for _ in range(repeat)]
            min_codes = max_codes = [math.ceil(n / per_code) for n in forced]
        else:
            min_codes = [math.ceil(MIN_FRAMES / per_code)] * len(captions)
            max_codes = [max_num_frames // per_code] * len(captions)

        prefix = plan = None
        if motion is not None or keep_frames is not None:
            prefix, plan = self._prefix_codes(motion, keep_frames, forced, seam_blend_s, len(captions))
            min_codes = [max(n, prefix.shape[1] + 1) for n in min_codes]
            max_codes = [max(n, prefix.shape[1] + 1) for n in max_codes]

        encoding = self.encode_text(prompts, return_tokens=True).repeat_interleave(repeat)
        encoding = encoding.to(dtype=self.transformer.dtype)
        token_kwargs = dict(text_token_states=encoding.states, text_mask=encoding.mask) if self.uses_text_tokens else {}
        self._interrupt = False
        on_token = None
        if callback_on_step_end is not None:

            def on_token(step: int, values: dict) -> dict:
                outputs = call_step_callback(self, callback_on_step_end, step, step, callback_names, values)
                return {"tokens": outputs.get("tokens"), "stop": self.interrupt}

        codes = self.transformer.generate(
            encoding.pooled, min_codes=min_codes, max_codes=max_codes, temperature=float(temperature), top_k=top_k,
            top_p=top_p, generator=generator, on_token=on_token, prefix_codes=prefix, **token_kwargs,
        )  # fmt: skip
        if output_type == "codes":
            self.maybe_free_model_hooks()
            return codes if return_dict else (codes,)
        lengths = forced if forced is not None else [min(len(c) * per_code, max_num_frames) for c in codes]
        if self.interrupt:  # stopped by the step callback: each motion ends with its codes
            lengths = [min(n, len(c) * per_code) for n, c in zip(lengths, codes)]
        normalised = self.decode_codes(codes, max(lengths))
        mask = lengths_mask(lengths, normalised.shape[1], device=normalised.device)[..., None].to(normalised.dtype)
        normalised = normalised * mask
        raw = self.normalizer.denormalize(normalised.to(self.normalizer.mean.dtype)).float() * mask
        if plan is not None:  # the kept prefix is the source itself, joined by the ramp
            frames = min(raw.shape[1], len(plan.source))
            weights = torch.from_numpy(plan.weights[:frames]).to(raw.device)[None]
            source = torch.from_numpy(plan.source[:frames]).to(raw.device)[None]
            raw[:, :frames] = raw[:, :frames] + weights * (source - raw[:, :frames])
            raw = raw * mask
            normalised = self.normalizer.normalize(raw.to(self.normalizer.mean.dtype)).float() * mask
        self.maybe_free_model_hooks()

        if output_type == "motion":
            metadata = {"generator": "Express4DT2MGPTPipeline", "temperature": float(temperature), "top_k": top_k, "top_p": top_p}
            motions = to_face_motions(raw, lengths, captions, fps=fps, **metadata)
            for motion, sequence in zip(motions, codes):
                motion.metadata["num_codes"] = len(sequence)
            return MotionPipelineOutput(motions=motions) if return_dict else (motions,)
        values = normalised.float() if output_type == "latent" else raw
        values = values.cpu().numpy() if output_type == "np" else values
        if not return_dict:
            return values, lengths
        return MotionBatchOutput(motions=values, lengths=lengths, captions=captions, fps=fps)

    def _prefix_codes(self, motion, keep_frames, forced, seam_blend_s: float, batch: int):
        """``(prefix codes [batch, P], EditPlan)`` of a continuation (see ``__call__``)."""
        fps = float(self.normalizer.config.fps)
        if not isinstance(motion, FaceMotion):
            raise ValueError("T2M-GPT continues one source performance: pass `motion=` (a FaceMotion) with "
                             "`keep_frames=[(0, seconds)]`")  # fmt: skip
        spans = parse_spans(keep_frames) if isinstance(keep_frames, str) else list(keep_frames or [])
        if len(spans) != 1 or float(spans[0][0]) != 0.0:
            raise ValueError(
                "T2M-GPT can only continue a prefix: keep_frames=[(0, seconds)]. It writes codes left to right over "
                "all channels at once, so keeping channels or later spans (in-betweening) needs the MDM pipeline"
            )
        if forced is None:
            raise ValueError("give the continued motion's length (num_frames or duration_s), longer than the kept prefix")
        length = max(forced)
        plan = prepare_edit(motion, length, fps, keep_frames=spans, seam_blend_s=seam_blend_s)
        kept = int(plan.kept[:, 0].sum())
        num_codes = kept // self.frames_per_code
        if num_codes < 1 or kept >= min(forced):
            raise ValueError(f"the kept prefix ({kept / fps:g} s) must be at least {self.frames_per_code / fps:g} s and "
                             f"shorter than the output ({min(forced) / fps:g} s)")  # fmt: skip
        source = torch.from_numpy(plan.source[: num_codes * self.frames_per_code]).to(self._execution_device)[None]
        normalised = self.normalizer.normalize(source.to(self.normalizer.mean.dtype)).to(self.vqvae.dtype)
        codes = self.vqvae.encode(normalised.to(self.vqvae.device)).reshape(1, -1)
        return codes.expand(batch, -1).to(self._execution_device), plan

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` in a step callback to end every motion at the tokens it has."""
        return bool(getattr(self, "_interrupt", False))

    @torch.no_grad()
    def decode_codes(self, codes: list[torch.Tensor], num_frames: int | None = None) -> torch.Tensor:
        """Normalised motion ``[B, T, 61]`` of code sequences of any lengths (zero past each).

        Sequences of equal length are decoded together; different lengths are never padded into one
        conv pass, so a motion does not depend on the other sequences of its batch.
        """
        per_code = self.frames_per_code
        frames = max(len(c) for c in codes) * per_code
        out = torch.zeros(len(codes), max(frames, num_frames or 0), self.vqvae.config.num_channels, device=self._execution_device)
        groups: dict[int, list[int]] = {}
        for i, sequence in enumerate(codes):
            groups.setdefault(len(sequence), []).append(i)
        for length, rows in groups.items():
            stacked = torch.stack([codes[i] for i in rows]).to(self.vqvae.device)
            out[rows, : length * per_code] = self.vqvae.decode(stacked).float().to(out.device)
        return out if num_frames is None else out[:, :num_frames]

    # -- model card ------------------------------------------------------------------------------------
    def model_card_fields(self) -> dict[str, Any]:
        """Placeholders of ``express4d_hf/hub_cards/model_card_t2m_gpt.md``: architecture from the configs, the rest from card_data."""
        vq, gpt = self.vqvae.config, self.transformer.config
        vq_params = sum(p.numel() for p in self.vqvae.parameters())
        gpt_params = sum(p.numel() for p in self.transformer.parameters())
        encoder = getattr(self.text_encoder, "name_or_path", None) or type(self.text_encoder).__name__
        fields: dict[str, Any] = {
            "model_name": "Express4D T2M-GPT baseline",
            "preset": "custom",
            "vqvae_architecture": (
                f"1-D conv encoder/decoder, width {vq.width}, {vq.depth} dilated residual units per stage "
                f"(growth {vq.dilation_growth_rate}), time downsampled x{2 ** vq.down_t}; codebook {vq.num_codes} "
                f"codes x {vq.code_dim} dims (EMA mu={vq.ema_mu}, dead-code reset below {vq.reset_threshold}); "
                f"{vq_params / 1e6:.2f} M parameters"
            ),
            "gpt_architecture": (
                f"causal transformer, {gpt.num_layers} layers x {gpt.hidden_size} wide, {gpt.num_heads} heads, "
                f"feed-forward x{gpt.ff_mult}, dropout {gpt.dropout}; up to {gpt.max_codes} codes "
                f"({gpt.max_codes * 2 ** vq.down_t} frames)"
                + ("; order-aware: every layer also attends to the text's token states"
                   if getattr(gpt, "text_conditioning", "pooled") == "tokens" else "")
                + f"; {gpt_params / 1e6:.2f} M parameters"
            ),
            "text_encoder": Path(str(encoder)).name or str(encoder),
            "text_dim": gpt.text_dim,
            "training_data": "not recorded",
            "training": "not recorded",
            "reconstruction": "not recorded",
            "metrics": "Not evaluated yet. Run `express4d evaluate` (20 replications, 95% intervals) and re-save.",
            "hardware": "not recorded",
        }
        fields.update({k: v for k, v in self.card_data.items() if v is not None})
        return fields


__all__ = ["OUTPUT_TYPES", "Express4DT2MGPTPipeline", "check_sampling"]
