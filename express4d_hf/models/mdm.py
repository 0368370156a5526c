"""``MDMDenoiser``: the Motion Diffusion Model (Tevet et al., ICLR 2023) denoiser for 61-channel face motion.

A transformer encoder reads ``[cond token; frame tokens]`` and predicts the clean motion ``x0`` from the
noisy ``x_t`` (MDM predicts the sample, not the noise, so geometric losses can act on it). The condition
token is ``MLP(timestep) + Linear(pooled text embedding)``; classifier-free guidance drops the text by
zeroing its embedding (``cond_drop_mask``), exactly as MDM's ``mask_cond`` does, so the unconditional
branch needs no extra parameters. Frames past each clip's length are excluded from attention with a
key-padding mask, so a clip's output does not depend on how much padding its batch carries. Attention is
``F.scaled_dot_product_attention`` (fused kernels on GPU and CPU).

The order-aware variant (``text_conditioning="tokens"``, presets ``tiny_order`` and ``paper_order``) keeps
the pooled condition token and, in every layer, lets the frame tokens also attend to the text encoder's token
states (the projected token states, with their own positions, are keys and values of the layer's attention;
padding tokens are masked). A pooled vector of "X and then Y" is nearly the vector of "Y and then X"; the token
states keep the order. Classifier-free guidance drops the whole token sequence (every text key masked) as well
as the pooled vector. ``text_attention`` says how the text keys meet the frame keys: the presets use
``"separate"`` (the text keys have a softmax of their own, added to the self-attention's output); the first
order-aware models used ``"joint"`` (one softmax over text and frame keys), where ~30-50 frame keys outvoted ~12
text keys: a trained tiny model gave the text 0-23 % of its attention and learned the order slowly (tiny preset,
order accuracy after 500 / 1500 steps, mean of 3 seeds: 0.74 / 0.69 against 0.82 / 0.76 with ``"separate"``;
docs/BENCHMARKS.md).

>>> import torch
>>> model = MDMDenoiser.from_preset("tiny").eval()
>>> x = torch.randn(2, 30, 61)
>>> mask = torch.arange(30)[None] < torch.tensor([[30], [24]])
>>> model(x, torch.tensor([10, 500]), torch.randn(2, model.config.text_dim), frame_mask=mask).shape
torch.Size([2, 30, 61])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

from ..core.arkit import NUM_CHANNELS
from ..core.constants import MAX_FRAMES
from .text import separate_text_masks

# Architecture presets. "paper" is MDM's HumanML3D configuration (8 layers, latent 512, 4 heads, ff 1024,
# GELU, dropout 0.1, one token per frame) as used by the Express4D paper. "tiny" trains in minutes on a
# 2-core CPU: 3 layers of width 128 over tokens of 4 frames (a quarter of the sequence; a depthwise
# convolution over the output frames smooths the token boundaries), and no dropout (a few thousand steps
# do not overfit, and dropout on the attention probabilities forces the slow unfused path on a CPU).
# On the procedural corpus (2000 steps, 2-core CPU), 4 frames per token trained twice as fast as 2 and
# reached R-Precision top-3 0.56 instead of 0.47 (evaluator on real test clips: 0.96; text-blind: 0.10).
MDM_PRESETS: dict[str, dict] = {
    "paper": dict(num_layers=8, hidden_size=512, num_heads=4, ff_size=1024, dropout=0.1, attention_dropout=0.1,
                  frames_per_token=1, output_smoothing=0),
    "tiny": dict(num_layers=3, hidden_size=128, num_heads=4, ff_size=256, dropout=0.0, attention_dropout=0.0,
                 frames_per_token=4, output_smoothing=9),
}  # fmt: skip
# The order-aware variant of each size: the same network attending to the text's token states.
MDM_PRESETS["paper_order"] = dict(MDM_PRESETS["paper"], text_conditioning="tokens", text_attention="separate")
MDM_PRESETS["tiny_order"] = dict(MDM_PRESETS["tiny"], text_conditioning="tokens", text_attention="separate")
TEXT_CONDITIONINGS = ("pooled", "tokens")
# How the frame tokens attend to the text token states (order-aware variant). "joint": the text keys share one
# softmax with the frame keys (the first order-aware models; the config default, so their saved folders load as
# they were trained). "separate": the same queries attend to the text keys in a softmax of their own and the two
# results are added (decoupled cross-attention), so the text is not outvoted by the ~30-50 frame keys.
# "cross": a separate pre-norm cross-attention sublayer (own queries and output projection) after self-attention.
TEXT_ATTENTIONS = ("joint", "separate", "cross")


class TextMemory(NamedTuple):
    """The order-aware denoiser's text, ready for its layers (:meth:`MDMDenoiser.text_memory`)."""

    keep: torch.Tensor  # [B, M] bool: the text tokens attended to (padding and dropped text excluded)
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values [B, heads, M, d]
    attn_mask: torch.Tensor | None  # [B, 1, 1, M] the text keys' attention mask ("separate" / "cross")


def sinusoidal_positions(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed ``[num_positions, dim]`` sine/cosine table of "Attention is all you need" (MDM's encoding)."""
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table


class MDMBlock(nn.Module):
    """Transformer encoder layer (the ``nn.TransformerEncoderLayer`` computation, pre-norm by default) whose
    attention is one ``F.scaled_dot_product_attention`` call, so fused kernels (flash / memory-efficient on GPU,
    the flash CPU kernel) run it with the padding mask.

    ``norm_first=False`` is the post-norm layer of ``nn.TransformerEncoderLayer``'s default (what the official
    MDM checkpoints were trained with): ``x = norm1(x + attn(x)); x = norm2(x + ff(x))``.
    """

    def __init__(self, hidden_size: int, num_heads: int, ff_size: int, dropout: float, attention_dropout: float,
                 activation: str, norm_first: bool = True, text_memory: bool = False,
                 text_attention: str = "joint"):  # fmt: skip
        super().__init__()
        self.num_heads, self.attention_dropout, self.norm_first = num_heads, attention_dropout, norm_first
        self.text_attention = text_attention if text_memory else None
        self.norm1 = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        # Order-aware variant: the text token states as extra keys/values of this layer's attention.
        self.norm_memory = nn.LayerNorm(hidden_size) if text_memory else None
        self.memory_kv = nn.Linear(hidden_size, 2 * hidden_size) if text_memory else None
        self.attn_out = nn.Linear(hidden_size, hidden_size)
        if self.text_attention == "cross":  # its own sublayer: queries, output projection, pre-norm
            self.norm_cross = nn.LayerNorm(hidden_size)
            self.cross_q = nn.Linear(hidden_size, hidden_size)
            self.cross_out = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.ff_in = nn.Linear(hidden_size, ff_size)
        self.ff_out = nn.Linear(ff_size, hidden_size)
        self.activation = {"gelu": nn.GELU(), "relu": nn.ReLU(), "silu": nn.SiLU()}[activation]
        self.dropout = nn.Dropout(dropout)

    def text_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's keys and values ``[B, heads, M, d]`` of the (projected) text token states ``memory``."""
        batch = memory.shape[0]
        memory = self.norm_memory(memory)
        return self.memory_kv(memory).view(batch, memory.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)

    def _text_attention(self, q: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor) -> torch.Tensor:
        """``q [B, heads, N, d]`` attending to the text keys alone (a softmax of their own)."""
        return F.scaled_dot_product_attention(
            q, *text_kv, attn_mask=text_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )

    def _attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None, text_kv=None, text_mask=None) -> torch.Tensor:
        """``text_kv``: this layer's text keys and values (:meth:`text_keys_values`). ``"joint"``: placed before
        the sequence's keys (``attn_mask`` covers ``M + length`` keys then); ``"separate"``: attended in a
        softmax of their own (``attn_mask`` covers the sequence, ``text_mask`` the text keys) and added."""
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if text_kv is not None and self.text_attention == "joint":
            k, v = torch.cat([text_kv[0], k], dim=2), torch.cat([text_kv[1], v], dim=2)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        if text_kv is not None and self.text_attention == "separate":
            attended = attended + self._text_attention(q, text_kv, text_mask)
        return self.dropout(self.attn_out(attended.transpose(1, 2).reshape(batch, length, width)))

    def _cross_attention(self, x: torch.Tensor, text_kv, text_mask) -> torch.Tensor:
        batch, length, width = x.shape
        q = self.cross_q(x).view(batch, length, self.num_heads, -1).transpose(1, 2)
        attended = self._text_attention(q, text_kv, text_mask)
        return self.dropout(self.cross_out(attended.transpose(1, 2).reshape(batch, length, width)))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.ff_out(self.dropout(self.activation(self.ff_in(x)))))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, text_kv=None, text_mask=None) -> torch.Tensor:
        """``text_kv``: this layer's keys and values of the text token states (order-aware variant,
        :meth:`text_keys_values`); ``text_mask``: the text keys' attention mask (``"separate"`` and ``"cross"``,
        ``models.text.separate_text_masks``; ``"joint"`` has them in ``attn_mask``)."""
        cross = text_kv is not None and self.text_attention == "cross"
        if self.norm_first:
            x = x + self._attention(self.norm1(x), attn_mask, text_kv, text_mask)
            if cross:
                x = x + self._cross_attention(self.norm_cross(x), text_kv, text_mask)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._attention(x, attn_mask, text_kv, text_mask))
        if cross:
            x = self.norm_cross(x + self._cross_attention(x, text_kv, text_mask))
        return self.norm2(x + self._feed_forward(x))


class MDMDenoiser(ModelMixin, ConfigMixin):
    """Transformer-encoder denoiser ``x_t -> x0`` conditioned on a timestep and a pooled text embedding.

    Args:
        num_channels: channels per frame (61 ARKit channels).
        max_frames: longest sequence the position table covers (196 training frames).
        text_dim: width of the pooled text embedding (384 for all-MiniLM-L6-v2).
        hidden_size, num_layers, num_heads, ff_size, activation: the transformer (pre-norm, MDM's sizes).
        dropout: dropout of the input tokens, residual branches and feed-forward hidden layer.
        attention_dropout: dropout of the attention probabilities.
        num_train_timesteps: diffusion steps the timestep embedding is trained for (kept for reference).
        frames_per_token: consecutive frames packed into one token (1 = MDM: one token per frame). 2 halves
            the sequence, so a CPU preset trains ~2-3x faster; the output is unpacked back to frames.
        output_smoothing: kernel size of a depthwise temporal convolution over the unpacked output frames
            (identity at initialisation; 0 = none). With several frames per token it learns to smooth the
            steps at token boundaries.
        norm_first: pre-norm layers (True, the default) or post-norm layers (False: ``nn.TransformerEncoderLayer``'s
            default, which the official MDM checkpoints use).
        final_layer_norm: a LayerNorm after the last layer (True, the default; the official MDM has none).
        text_conditioning: ``"pooled"`` (MDM: one pooled sentence vector in the condition token) or
            ``"tokens"`` (order-aware: the condition token as before, plus the text encoder's token states as
            keys/values of every layer's attention; ``forward`` then needs ``encoder_token_states``).
        max_text_tokens: longest token sequence the text positions cover (``"tokens"`` only).
        text_token_dim: width of the token states (``"tokens"`` only; None = ``text_dim``; CLIP's projected
            pooled vector can be narrower or wider than its token states).
        text_attention: how the frame tokens attend to the token states (``"tokens"`` only; see
            ``TEXT_ATTENTIONS``). ``"joint"`` (the default, what configs saved before the field existed mean):
            one softmax over text and frame keys. ``"separate"`` (the ``*_order`` presets): the same queries
            attend to the text keys in a softmax of their own, added to the self-attention's result.
            ``"cross"``: a separate cross-attention sublayer.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        num_channels: int = NUM_CHANNELS,
        max_frames: int = MAX_FRAMES,
        text_dim: int = 384,
        hidden_size: int = 512,
        num_layers: int = 8,
        num_heads: int = 4,
        ff_size: int = 1024,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation: str = "gelu",
        num_train_timesteps: int = 1000,
        frames_per_token: int = 1,
        output_smoothing: int = 0,
        norm_first: bool = True,
        final_layer_norm: bool = True,
        text_conditioning: str = "pooled",
        max_text_tokens: int = 64,
        text_token_dim: int | None = None,
        text_attention: str = "joint",
        pooled_condition: bool = True,
    ):
        super().__init__()
        if text_conditioning not in TEXT_CONDITIONINGS:
            raise ValueError(f"text_conditioning must be one of {TEXT_CONDITIONINGS}, got {text_conditioning!r}")
        if text_attention not in TEXT_ATTENTIONS:
            raise ValueError(f"text_attention must be one of {TEXT_ATTENTIONS}, got {text_attention!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        if frames_per_token < 1:
            raise ValueError(f"frames_per_token must be >= 1, got {frames_per_token}")
        if output_smoothing < 0 or (output_smoothing and output_smoothing % 2 == 0):
            raise ValueError(f"output_smoothing must be 0 or an odd kernel size, got {output_smoothing}")
        if activation not in ("gelu", "relu", "silu"):
            raise ValueError(f"activation must be 'gelu', 'relu' or 'silu', got {activation!r}")
        self.input_proj = nn.Linear(num_channels * frames_per_token, hidden_size)
        # Timestep -> sinusoid -> 2-layer MLP (diffusers' blocks, MDM's TimestepEmbedder).
        self.time_proj = Timesteps(hidden_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(hidden_size, hidden_size, act_fn="silu")
        if not pooled_condition and text_conditioning != "tokens":
            raise ValueError("pooled_condition=False needs text_conditioning='tokens' (the text would be lost)")
        self.text_proj = nn.Linear(text_dim, hidden_size) if pooled_condition else None
        # +1 position for the condition token; a derived table, so it is not saved with the weights.
        max_tokens = -(-max_frames // frames_per_token)
        self.register_buffer("positions", sinusoidal_positions(max_tokens + 1, hidden_size), persistent=False)
        self.input_dropout = nn.Dropout(dropout)
        self.uses_text_tokens = text_conditioning == "tokens"
        if self.uses_text_tokens:
            self.text_token_proj = nn.Linear(text_token_dim or text_dim, hidden_size)
            self.register_buffer("text_positions", sinusoidal_positions(max_text_tokens, hidden_size), persistent=False)
        self.layers = nn.ModuleList(
            MDMBlock(hidden_size, num_heads, ff_size, dropout, attention_dropout, activation, norm_first,
                     self.uses_text_tokens, text_attention)  # fmt: skip
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_size) if final_layer_norm else nn.Identity()
        self.output_proj = nn.Linear(hidden_size, num_channels * frames_per_token)
        self.output_smoother = None
        if output_smoothing:
            self.output_smoother = nn.Conv1d(
                num_channels, num_channels, output_smoothing, padding=output_smoothing // 2, groups=num_channels
            )
            with torch.no_grad():  # start as the identity
                self.output_smoother.weight.zero_()
                self.output_smoother.weight[:, 0, output_smoothing // 2] = 1.0
                self.output_smoother.bias.zero_()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> MDMDenoiser:
        """A fresh model of the ``"tiny"`` or ``"paper"`` preset; keyword arguments override its fields."""
        if name not in MDM_PRESETS:
            raise ValueError(f"unknown MDM preset {name!r}; choose one of {sorted(MDM_PRESETS)}")
        return cls(**{**MDM_PRESETS[name], **overrides})

    def text_memory(self, encoder_token_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None = None,
                    cond_drop_mask: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                    batch: int | None = None) -> TextMemory:  # fmt: skip
        """Every layer's keys and values of the text token states (order-aware variant), with their masks.

        ``forward`` computes it from ``encoder_token_states``; a sampler whose text does not change over its
        steps computes it once and passes it as ``text_memory=`` to every step (the same result, without each
        layer's text LayerNorm and projection at every step). ``dtype``: cast the projected states to it first
        (``forward`` uses its tokens' dtype); ``batch``: the batch size the states must have (default: theirs)."""
        if batch is None:
            batch = encoder_token_states.shape[0] if encoder_token_states is not None else 0
        memory, keep = self._text_memory(encoder_token_states, encoder_attention_mask, cond_drop_mask, batch)
        if dtype is not None:
            memory = memory.to(dtype)
        keys_values = [layer.text_keys_values(memory) for layer in self.layers]
        attn_mask = None
        if self.config.text_attention != "joint":  # text-less rows attend to zero values (separate_text_masks)
            attn_mask, has_text = separate_text_masks(keep)
            keys_values = [(k, v * has_text.to(v.dtype)) for k, v in keys_values]
        return TextMemory(keep, keys_values, attn_mask)

    def _text_memory(self, states, mask, drop, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected token states with their positions ``[B, L, H]`` and which of them to attend to ``[B, L]``."""
        if states is None:
            raise ValueError(
                "this MDMDenoiser is order-aware (text_conditioning='tokens'): pass encoder_token_states "
                "[B, L, text_dim] (and encoder_attention_mask) from the text encoder"
            )
        width = self.config.text_token_dim or self.config.text_dim
        if states.ndim != 3 or states.shape[0] != batch or states.shape[2] != width:
            raise ValueError(f"encoder_token_states must be [{batch}, L, {width}], got {tuple(states.shape)}")
        length = states.shape[1]
        if length > self.config.max_text_tokens:
            raise ValueError(f"{length} text tokens; the model covers at most {self.config.max_text_tokens}")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=states.device)
        elif mask.shape != (batch, length):
            raise ValueError(f"encoder_attention_mask must be [{batch}, {length}], got {tuple(mask.shape)}")
        keep = mask.to(device=states.device, dtype=torch.bool)
        if drop is not None:  # classifier-free guidance drops the whole sequence
            keep = keep & ~drop.to(device=states.device, dtype=torch.bool)[:, None]
        states = states.to(self.text_token_proj.weight.dtype) * keep[..., None].to(self.text_token_proj.weight.dtype)
        memory = self.text_token_proj(states) + self.text_positions[:length].to(self.text_token_proj.weight.dtype)
        return memory, keep

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        cond_drop_mask: torch.Tensor | None = None,
        encoder_token_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        text_memory: TextMemory | None = None,
    ) -> torch.Tensor:
        """Predict the clean motion.

        Args:
            sample: noisy normalised motion ``[B, T, num_channels]``, ``T <= max_frames``.
            timestep: diffusion step(s), ``[B]`` or a scalar.
            encoder_hidden_states: pooled text embeddings ``[B, text_dim]``.
            frame_mask: ``[B, T]`` bool, True on frames inside each clip (None = all valid).
            cond_drop_mask: ``[B]`` bool, True where the text is dropped (unconditional branch of CFG): the
                pooled vector is zeroed and, in the order-aware variant, every text token is masked.
            encoder_token_states: ``[B, L, text_dim]`` the text encoder's token states (order-aware variant
                only; required there, ignored otherwise).
            encoder_attention_mask: ``[B, L]`` bool, True on real tokens (None = all real).
            text_memory: :meth:`text_memory` of the token states, the mask and ``cond_drop_mask``, computed once
                for a whole sampling loop (order-aware variant; replaces ``encoder_token_states``).

        Returns:
            ``x0`` prediction ``[B, T, num_channels]`` (values past each clip's length are meaningless).
        """
        batch, frames, channels = sample.shape
        if channels != self.config.num_channels:
            raise ValueError(f"sample has {channels} channels per frame, the model expects {self.config.num_channels}")
        if frames > self.config.max_frames:
            raise ValueError(f"sample has {frames} frames; the model covers at most {self.config.max_frames}")
        if encoder_hidden_states.ndim != 2 or encoder_hidden_states.shape != (batch, self.config.text_dim):
            raise ValueError(
                f"encoder_hidden_states must be pooled text embeddings [{batch}, {self.config.text_dim}], "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        if text_memory is not None and text_memory.keep.shape[0] != batch:
            raise ValueError(f"text_memory holds {text_memory.keep.shape[0]} samples' text; the batch has {batch}")
        if frame_mask is not None:
            if frame_mask.shape != (batch, frames):
                raise ValueError(f"frame_mask must be [{batch}, {frames}], got {tuple(frame_mask.shape)}")
            frame_mask = frame_mask.to(device=sample.device, dtype=torch.bool)
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        dtype = self.input_proj.weight.dtype
        cond = self.time_embedding(self.time_proj(timestep).to(dtype))
        if self.text_proj is not None:
            text = encoder_hidden_states.to(dtype)
            if cond_drop_mask is not None:
                text = text * (~cond_drop_mask.to(device=text.device, dtype=torch.bool)).to(text.dtype)[:, None]
            cond = cond + self.text_proj(text)
        cond = cond[:, None]  # [B, 1, H]
        pack = self.config.frames_per_token
        num_tokens = -(-frames // pack)
        if num_tokens * pack != frames:  # pad to whole tokens (masked out below)
            sample = F.pad(sample, (0, 0, 0, num_tokens * pack - frames))
            if frame_mask is None:
                frame_mask = torch.ones(batch, frames, dtype=torch.bool, device=sample.device)
        if pack > 1 and frame_mask is not None:  # a token straddling a clip's end sees zeros, not the padding
            sample = sample * F.pad(frame_mask, (0, num_tokens * pack - frames))[..., None].to(sample.dtype)
        packed = sample.reshape(batch, num_tokens, pack * channels).to(self.input_proj.weight.dtype)
        tokens = torch.cat([cond, self.input_proj(packed)], dim=1)
        tokens = self.input_dropout(tokens + self.positions[: num_tokens + 1].to(tokens.dtype))
        if self.uses_text_tokens and text_memory is None:
            text_memory = self.text_memory(encoder_token_states, encoder_attention_mask, cond_drop_mask, tokens.dtype, batch)
        memory_keep = text_memory.keep if self.uses_text_tokens else None
        attn_mask = None
        if frame_mask is not None or memory_keep is not None:
            if frame_mask is not None:
                token_mask = F.pad(frame_mask, (0, num_tokens * pack - frames)).view(batch, num_tokens, pack).any(-1)
            else:
                token_mask = torch.ones(batch, num_tokens, dtype=torch.bool, device=sample.device)
            # True = attend; the condition token is always visible, so no row is fully masked.
            keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=sample.device), token_mask], 1)
            if memory_keep is not None and self.config.text_attention == "joint":  # text keys come first
                keep = torch.cat([memory_keep, keep], 1)
            attn_mask = keep[:, None, None, :]
        if self.uses_text_tokens:
            for layer, keys_values in zip(self.layers, text_memory.keys_values):
                tokens = layer(tokens, attn_mask, keys_values, text_memory.attn_mask)
        else:
            for layer in self.layers:
                tokens = layer(tokens, attn_mask)
        hidden = self.final_norm(tokens)
        output = self.output_proj(hidden[:, 1:]).reshape(batch, num_tokens * pack, channels)
        if self.output_smoother is not None:
            if frame_mask is not None:  # padding enters the convolution as zeros, whatever it held
                output = output * F.pad(frame_mask, (0, num_tokens * pack - frames))[..., None].to(output.dtype)
            output = self.output_smoother(output.transpose(1, 2)).transpose(1, 2)
        return output[:, :frames]
