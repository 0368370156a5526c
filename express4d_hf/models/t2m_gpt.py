"""T2M-GPT (Zhang et al., CVPR 2023) for facial motion: a motion VQ-VAE tokenizer and a causal text-to-code GPT.

The paper's second Express4D baseline; the official Express4D code never released it, so this follows the
upstream T2M-GPT recipe (github.com/Mael-zys/T2M-GPT) adapted to 61 ARKit channels at 20 fps:

* :class:`MotionVQVAE` — 1-D conv encoder/decoder with dilated residual blocks and a temporal downsampling
  of 4 (two stride-2 stages), and an EMA codebook with dead-code reset (``QuantizeEMAReset`` upstream):
  codes unused for a while are re-initialised from random encoder outputs of the current batch, which
  keeps the whole codebook alive. Loss = smooth-L1 reconstruction of the normalised channels + a velocity
  term + a commitment term.
* :class:`T2MGPT` — a causal transformer over ``[text token; motion codes; end token]`` whose first token is
  the projected pooled sentence embedding; it predicts the next code or the end token. Training corrupts a
  fraction ``tau`` of the input codes with random codes (upstream's trick against exposure bias). A
  key-value cache makes batched autoregressive decoding linear in the sequence length. Its order-aware variant
  (``text_conditioning="tokens"``, presets ``tiny_order`` / ``paper_order``) also attends, in every layer, to
  the text encoder's token states (extra keys/values ahead of the sequence, padding masked), so "X then Y"
  and "Y then X" condition it differently.

>>> vq = MotionVQVAE.from_preset("tiny")
>>> codes = vq.encode(torch.zeros(2, 40, 61))
>>> tuple(codes.shape), tuple(vq.decode(codes).shape)
((2, 10), (2, 40, 61))
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core.arkit import NUM_CHANNELS
from ..core.constants import MAX_FRAMES, MIN_FRAMES
from .text import attention_dtype, separate_text_masks

# --- VQ-VAE ---------------------------------------------------------------------------------------------
VQVAE_PRESETS: dict[str, dict] = {
    # CPU minutes. 128 codes keep ~8 encoder outputs per code in a batch of 64 x 64-frame windows, the ratio
    # upstream has (256 x 64 frames for 512 codes); 512 codes at this batch size churn through dead-code resets
    # (test MSE 0.41 vs 0.27 after 500 steps). L2 instead of smooth-L1 halves the test MSE at equal steps
    # (0.27 vs 0.57): it weighs the brief large facial events that smooth-L1 treats like outliers.
    "tiny": dict(num_codes=128, code_dim=64, width=64, depth=2, reconstruction_loss="l2"),
    # Upstream HumanML3D default: 512 codes x 512 dims, width 512, 3 dilated blocks per stage.
    "paper": dict(num_codes=512, code_dim=512, width=512, depth=3),
}


class ResConv1DBlock(nn.Module):
    """``x + conv1x1(act(dilated_conv3(act(x))))`` — upstream's residual unit."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Resnet1D(nn.Sequential):
    """``depth`` residual units with dilations ``rate**i``, largest first (upstream ``reverse_dilation``)."""

    def __init__(self, width: int, depth: int, dilation_growth_rate: int):
        super().__init__(*[ResConv1DBlock(width, dilation_growth_rate**i) for i in reversed(range(depth))])


class MotionEncoder(nn.Sequential):
    def __init__(self, in_channels: int, code_dim: int, width: int, depth: int, down_t: int, dilation_growth_rate: int):
        layers: list[nn.Module] = [nn.Conv1d(in_channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(down_t):  # each stage halves time: kernel 4, stride 2, padding 1
            layers += [nn.Conv1d(width, width, 4, stride=2, padding=1), Resnet1D(width, depth, dilation_growth_rate)]
        layers.append(nn.Conv1d(width, code_dim, 3, padding=1))
        super().__init__(*layers)


class MotionDecoder(nn.Sequential):
    def __init__(self, out_channels: int, code_dim: int, width: int, depth: int, down_t: int, dilation_growth_rate: int):
        layers: list[nn.Module] = [nn.Conv1d(code_dim, width, 3, padding=1), nn.ReLU()]
        for _ in range(down_t):
            layers += [
                Resnet1D(width, depth, dilation_growth_rate),
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv1d(width, width, 3, padding=1),
            ]
        layers += [nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, out_channels, 3, padding=1)]
        super().__init__(*layers)


class EMAResetQuantizer(nn.Module):
    """Nearest-neighbour codebook updated by exponential moving averages, with dead-code reset.

    Buffers (saved with the model): ``codebook [K, D]``, the EMA of the sum of vectors assigned to each code
    ``code_sum`` and of their count ``code_count``, and ``initialized``. On the first training batch the
    codebook is filled with encoder outputs. At every training step a code whose EMA count drops below
    ``reset_threshold`` is replaced by a random encoder output of the current batch. Under
    ``torch.distributed`` the per-process sums and counts are all-reduced and the random replacements come
    from rank 0, so every process keeps the same codebook.
    """

    def __init__(self, num_codes: int, code_dim: int, mu: float = 0.99, reset_threshold: float = 1.0):
        super().__init__()
        self.num_codes, self.code_dim, self.mu, self.reset_threshold = num_codes, code_dim, mu, reset_threshold
        self.register_buffer("codebook", torch.zeros(num_codes, code_dim))
        self.register_buffer("code_sum", torch.zeros(num_codes, code_dim))
        self.register_buffer("code_count", torch.zeros(num_codes))
        self.register_buffer("initialized", torch.tensor(False))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest codes for vectors ``x [N, D]``."""
        codebook = self.codebook.float()
        x = x.float()
        distance = x.pow(2).sum(-1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(-1)[None]
        return distance.argmin(-1)

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook)

    @staticmethod
    def _tile(x: torch.Tensor, n: int) -> torch.Tensor:
        """At least ``n`` rows: repeat ``x`` with a little noise when the batch has fewer vectors than codes."""
        if len(x) >= n:
            return x
        repeats = math.ceil(n / len(x))
        std = 0.01 / math.sqrt(x.shape[1])
        return (x.repeat(repeats, 1) + torch.randn(len(x) * repeats, x.shape[1], device=x.device) * std)[: max(n, len(x))]

    def _random_rows(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``num_codes`` random rows of ``x``, drawn among the ``keep`` rows first (static shapes, no host sync:
        random keys, valid rows ranked above padded ones); a batch with fewer rows than codes is tiled with a
        little noise."""
        tiled = self._tile(x, self.num_codes)
        score = torch.rand(len(tiled), device=x.device)
        if keep is not None:
            score = score + self._tile(keep[:, None].to(x.dtype), self.num_codes)[:, 0].round()
        rows = tiled[score.topk(self.num_codes, sorted=False).indices].contiguous()
        if _distributed():
            torch.distributed.broadcast(rows, src=0)
        return rows

    @torch.no_grad()
    def _init_codebook(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        rows = self._random_rows(x, keep)
        self.codebook.copy_(rows)
        self.code_sum.copy_(rows)
        self.code_count.fill_(1.0)
        self.initialized.fill_(True)

    # Kept out of torch.compile: Inductor (torch 2.11 on the H200, 2.13 on a CPU) compiled the former
    # ``onehot.t() @ x`` / ``onehot.sum(0)`` pair into a wrong ``code_sum`` (off by up to ~15 after one step), and
    # the codebook blew up: commitment ~1e23, test reconstruction MSE ~1.0 (a mean predictor) in every compiled
    # paper-preset run. The EMA update is a handful of small ops; eager costs nothing inside the step's CUDA graph.
    @torch.compiler.disable
    @torch.no_grad()
    def _update(self, x: torch.Tensor, indices: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        onehot = F.one_hot(indices, self.num_codes).to(x.dtype)  # [N, K]
        if keep is not None:  # padded positions neither count nor pull their code
            onehot = onehot * keep[:, None].to(x.dtype)
        # Sums and counts from one matmul (deterministic, unlike scatter-add with atomics on a GPU).
        sums = onehot.t() @ torch.cat([x, torch.ones_like(x[:, :1])], 1)  # [K, D + 1]
        batch_sum, batch_count = sums[:, :-1], sums[:, -1]
        if _distributed():
            torch.distributed.all_reduce(batch_sum)
            torch.distributed.all_reduce(batch_count)
        random_rows = self._random_rows(x, keep)
        self.code_sum.mul_(self.mu).add_(batch_sum, alpha=1 - self.mu)
        self.code_count.mul_(self.mu).add_(batch_count, alpha=1 - self.mu)
        alive = (self.code_count >= self.reset_threshold).unsqueeze(1).to(x.dtype)
        updated = self.code_sum / self.code_count.clamp_min(1e-7).unsqueeze(1)
        self.codebook.copy_(alive * updated + (1 - alive) * random_rows)
        return batch_count

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None):
        """Quantise ``x [B, D, S]``; ``valid [B, S]`` excludes padded positions from losses and updates.

        Returns ``(quantised with straight-through gradient [B, D, S], indices [B, S], commitment loss,
        batch perplexity)``. Once the codebook is initialised, a training step has static shapes and no host
        synchronisation (padding is excluded by weights, not by boolean indexing), so it can be replayed as a
        CUDA graph.
        """
        batch, dim, steps = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.permute(0, 2, 1).reshape(-1, dim).float()
            keep = valid.reshape(-1) if valid is not None else torch.ones(len(flat), dtype=torch.bool, device=x.device)
            if self.training and not getattr(self, "_known_initialized", False):
                if not bool(self.initialized):
                    self._init_codebook(flat.detach(), keep)
                self._known_initialized = True  # read once: later steps never synchronise on it
            indices = self.quantize(flat)
            weights = keep.to(flat.dtype)
            if self.training:
                counts = self._update(flat.detach(), indices, keep)
            else:
                counts = torch.bincount(indices, weights=weights, minlength=self.num_codes).float()
            probs = counts / counts.sum().clamp_min(1.0)
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-7)).sum())
            quantized = self.dequantize(indices)
            commit = ((flat - quantized.detach()) ** 2).mean(-1)
            commit = (commit * weights).sum() / weights.sum().clamp_min(1.0)
            quantized = flat + (quantized - flat).detach()
        quantized = quantized.to(x.dtype).reshape(batch, steps, dim).permute(0, 2, 1)
        return quantized, indices.reshape(batch, steps), commit, perplexity

    def _load_from_state_dict(self, *args, **kwargs):
        self._known_initialized = False  # loaded weights: read the flag again
        return super()._load_from_state_dict(*args, **kwargs)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


RECONSTRUCTION_LOSSES = {"smooth_l1": F.smooth_l1_loss, "l2": F.mse_loss, "l1": F.l1_loss}


@dataclass
class VQVAELosses:
    loss: torch.Tensor  # weighted total
    reconstruction: torch.Tensor  # distance on the normalised channels (valid frames), see reconstruction_loss
    velocity: torch.Tensor  # the same on frame-to-frame differences
    commitment: torch.Tensor  # ||encoder output - sg(code)||^2
    perplexity: torch.Tensor  # exp(entropy) of this batch's code histogram


class MotionVQVAE(ModelMixin, ConfigMixin):
    """Motion tokenizer: ``[B, T, 61]`` normalised motion <-> ``[B, T/4]`` codebook indices.

    Args:
        num_channels: motion channels (61 ARKit channels).
        num_codes: codebook size K (upstream 512).
        code_dim: code vector width D (upstream 512).
        width: conv channels of encoder and decoder (upstream 512).
        depth: dilated residual units per resolution stage (upstream 3).
        dilation_growth_rate: dilation multiplier between units (upstream 3: dilations 9, 3, 1).
        down_t: stride-2 stages; time is downsampled by ``2**down_t`` (upstream 2, i.e. x4).
        ema_mu: EMA decay of the codebook statistics (upstream 0.99).
        reset_threshold: codes whose EMA usage count falls below this are reset (upstream 1.0).
        commitment_weight: weight of the commitment loss (upstream 0.02).
        velocity_weight: weight of the velocity reconstruction loss (upstream 0.5).
        reconstruction_loss: ``"smooth_l1"`` (upstream's ``l1_smooth``), ``"l2"`` or ``"l1"``, for both the
            reconstruction and the velocity terms. Facial channels are mostly at rest with brief large events
            (a cheek puff, a wink): L2 weighs those events more and the tokenizer learns them sooner.
    """

    @register_to_config
    def __init__(
        self,
        num_channels: int = NUM_CHANNELS,
        num_codes: int = 512,
        code_dim: int = 512,
        width: int = 512,
        depth: int = 3,
        dilation_growth_rate: int = 3,
        down_t: int = 2,
        ema_mu: float = 0.99,
        reset_threshold: float = 1.0,
        commitment_weight: float = 0.02,
        velocity_weight: float = 0.5,
        reconstruction_loss: str = "smooth_l1",
    ):
        super().__init__()
        if reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"reconstruction_loss must be one of {sorted(RECONSTRUCTION_LOSSES)}, got {reconstruction_loss!r}")
        self.encoder = MotionEncoder(num_channels, code_dim, width, depth, down_t, dilation_growth_rate)
        self.decoder = MotionDecoder(num_channels, code_dim, width, depth, down_t, dilation_growth_rate)
        self.quantizer = EMAResetQuantizer(num_codes, code_dim, ema_mu, reset_threshold)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> MotionVQVAE:
        if preset not in VQVAE_PRESETS:
            raise ValueError(f"unknown VQ-VAE preset {preset!r}; choose one of {sorted(VQVAE_PRESETS)}")
        return cls(**{**VQVAE_PRESETS[preset], **overrides})

    @property
    def downsample(self) -> int:
        """Frames per code (4)."""
        return 2 ** self.config.down_t

    def _frames_multiple(self, motion: torch.Tensor) -> torch.Tensor:
        usable = motion.shape[1] // self.downsample * self.downsample
        if usable == 0:
            raise ValueError(f"motion of {motion.shape[1]} frames is shorter than one code ({self.downsample} frames)")
        return motion[:, :usable]

    def _encode_latent(self, motion: torch.Tensor) -> torch.Tensor:
        return self.encoder(motion.permute(0, 2, 1).to(self.dtype))  # [B, D, T/4]

    def forward(self, motion: torch.Tensor, mask: torch.Tensor | None = None):
        """Reconstruct ``motion [B, T, C]``; returns ``(reconstruction [B, T', C], indices, commitment, perplexity)``
        where ``T'`` is ``T`` rounded down to a multiple of 4 and ``mask [B, T]`` marks valid frames."""
        motion = self._frames_multiple(motion)
        valid = None
        if mask is not None:
            mask = mask[:, : motion.shape[1]]
            # a code is valid when its first frame is (padding only ever follows a clip)
            valid = mask[:, :: self.downsample]
        latent = self._encode_latent(motion)
        quantized, indices, commitment, perplexity = self.quantizer(latent, valid)
        reconstruction = self.decoder(quantized).permute(0, 2, 1)
        return reconstruction, indices, commitment, perplexity

    def compute_loss(self, motion: torch.Tensor, mask: torch.Tensor | None = None) -> VQVAELosses:
        """The training objective on normalised motion ``[B, T, C]`` (frames outside ``mask`` are ignored)."""
        reconstruction, _, commitment, perplexity = self(motion, mask)
        return self.loss_from_outputs(reconstruction, commitment, perplexity, motion, mask)

    def loss_from_outputs(self, reconstruction, commitment, perplexity, motion, mask=None) -> VQVAELosses:
        """The objective from :meth:`forward`'s outputs (a trainer calls the DDP-wrapped forward, then this)."""
        target = self._frames_multiple(motion).to(reconstruction.dtype)
        weights = (mask[:, : target.shape[1]] if mask is not None else torch.ones(target.shape[:2], device=target.device)).to(target.dtype)
        distance = RECONSTRUCTION_LOSSES[self.config.reconstruction_loss]
        per_frame = distance(reconstruction, target, reduction="none").mean(-1)
        reconstruction_loss = (per_frame * weights).sum() / weights.sum().clamp_min(1)
        vel_weights = weights[:, 1:] * weights[:, :-1]
        vel = distance(reconstruction.diff(dim=1), target.diff(dim=1), reduction="none").mean(-1)
        velocity_loss = (vel * vel_weights).sum() / vel_weights.sum().clamp_min(1)
        total = reconstruction_loss + self.config.velocity_weight * velocity_loss + self.config.commitment_weight * commitment
        return VQVAELosses(total, reconstruction_loss, velocity_loss, commitment, perplexity)

    @torch.no_grad()
    def encode(self, motion: torch.Tensor, lengths: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """Code indices ``[B, T // 4]`` of normalised motion ``[B, T, C]``.

        With ``lengths``, each clip is encoded on its own first ``length // 4 * 4`` frames (so padding never
        leaks into its codes through the conv receptive field) and positions past ``length // 4`` hold ``-1``.
        """
        motion = self._frames_multiple(motion)
        if lengths is None:
            return self.quantizer.quantize(self._encode_latent(motion).permute(0, 2, 1).reshape(-1, self.config.code_dim)).reshape(motion.shape[0], -1)
        lengths = [int(n) for n in (lengths.tolist() if torch.is_tensor(lengths) else lengths)]
        out = torch.full((motion.shape[0], motion.shape[1] // self.downsample), -1, dtype=torch.long, device=motion.device)
        for num_codes, rows in _group_by(lengths, key=lambda n: min(n, motion.shape[1]) // self.downsample).items():
            if num_codes == 0:
                raise ValueError(f"clips {rows} are shorter than one code ({self.downsample} frames)")
            out[rows, :num_codes] = self.encode(motion[rows, : num_codes * self.downsample])
        return out

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Normalised motion ``[B, 4 * S, C]`` of code indices ``[B, S]`` (all in ``[0, num_codes)``)."""
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.num_codes):
            raise ValueError(f"code indices must lie in [0, {self.config.num_codes}); got [{int(codes.min())}, {int(codes.max())}]")
        quantized = self.quantizer.dequantize(codes.long()).permute(0, 2, 1).to(self.dtype)
        return self.decoder(quantized).permute(0, 2, 1)

    @torch.no_grad()
    def reconstruct(self, motion: torch.Tensor, lengths: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``decode(encode(motion))`` ``[B, T // 4 * 4, C]``; with ``lengths``, each clip on its own frames (zero past them)."""
        codes = self.encode(motion, lengths)
        out = torch.zeros(codes.shape[0], codes.shape[1] * self.downsample, motion.shape[-1], device=motion.device)
        num_codes = (codes >= 0).sum(1).tolist()
        for n, rows in _group_by(num_codes, key=lambda n: n).items():
            if n:
                out[rows, : n * self.downsample] = self.decode(codes[rows, :n]).float()
        return out

    @torch.no_grad()
    def codebook_usage(self) -> dict[str, float]:
        """Codebook health from the EMA usage counts: perplexity (effective number of codes) and dead codes."""
        counts = self.quantizer.code_count.float()
        probs = counts / counts.sum().clamp_min(1e-7)
        perplexity = float(torch.exp(-(probs * torch.log(probs + 1e-7)).sum()))
        dead = int((counts < self.config.reset_threshold).sum())
        return {"perplexity": perplexity, "dead_codes": float(dead), "used_codes": float(self.config.num_codes - dead)}


def _group_by(items: list[int], key) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return groups


MIN_CODES = -(-MIN_FRAMES // 4)  # the shortest clip (1 s) in codes of 4 frames: the end token waits this long


# --- GPT -----------------------------------------------------------------------------------------------
GPT_PRESETS: dict[str, dict] = {
    # CPU minutes: 2 layers x 128 with a x2 feed-forward matched 3 layers with x4 (held-out loss 2.27 vs 2.28,
    # R-Precision top-3 0.57 vs 0.56 after 600 steps) at 2/3 of the cost.
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=4, ff_mult=2, dropout=0.1),
    # Upstream HumanML3D uses 18 layers x 1024 wide (16 heads, ~230M parameters) for 23k clips; on Express4D's
    # ~1.2k clips (2.4k with mirroring, ~50 codes each) that size memorises the training set, so the paper
    # preset keeps the recipe but shrinks the model to 8 layers x 512 (8 heads, ~25M parameters) with more dropout.
    "paper": dict(hidden_size=512, num_layers=8, num_heads=8, dropout=0.2),
}
# The order-aware variant of each size: the same GPT attending to the text's token states, in a softmax of their
# own ("separate"; see TEXT_ATTENTIONS).
GPT_PRESETS["paper_order"] = dict(GPT_PRESETS["paper"], text_conditioning="tokens", text_attention="separate")
GPT_PRESETS["tiny_order"] = dict(GPT_PRESETS["tiny"], text_conditioning="tokens", text_attention="separate")
TEXT_CONDITIONINGS = ("pooled", "tokens")
# How the codes attend to the text token states (order-aware variant), as in MDM (models.mdm.TEXT_ATTENTIONS).
# "joint": the text keys share one softmax with the code keys (the first order-aware GPTs; the config default, so
# their saved folders load as they were trained). At the paper preset that GPT followed the order no better than
# the pooled one (order accuracy 0.21-0.29 at every kept checkpoint, H200, 2026-12-02). "separate": the same
# queries attend to the text keys in a softmax of their own and the two results are added (decoupled
# cross-attention), so the preceding codes cannot outvote the text: what fixed MDM's slow order learning. For the
# GPT: order accuracy 0.82 on the tiny preset (as joint) and 0.82 [0.68, 0.96] on the paper preset (H200, 2026-12-02).
TEXT_ATTENTIONS = ("joint", "separate")
# The kernels "separate"'s text attention may use in half-precision training (elsewhere SDPA picks the same by
# itself): the memory-efficient one on CUDA. cuDNN's kernel, SDPA's choice in bf16, spends as long on these ~50
# queries x ~30 text keys as on the self-attention; the compiled, graphed paper-preset training step took 7.64 /
# 7.84 ms with the memory-efficient kernel against 8.03 / 8.07 ms (pooled 6.36 ms; H200, torch 2.11). Flash (the
# CPU's) and math where it does not apply.
TEXT_ATTENTION_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


class CausalSelfAttention(nn.Module):
    """Causal self-attention with a key-value cache; optionally with a text memory: ``memory_kv`` keys/values
    of the text token states, visible to every position (padding masked) and kept in the cache. ``"joint"``
    places them ahead of the sequence's keys (one softmax; the cache ``(k, v)`` has them at the front);
    ``"separate"`` keeps them apart (their own softmax; the cache is ``(k, v, text_k, text_v, text_mask)``, the
    last the additive mask of ``separate_text_masks``, which later passes reuse instead of building it again)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, text_memory: bool = False,
                 text_attention: str = "joint"):  # fmt: skip
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.text_attention = text_attention if text_memory else None
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.resid_dropout = nn.Dropout(dropout)
        self.memory_kv = nn.Linear(hidden_size, 2 * hidden_size) if text_memory else None

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, ...] | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                separate_masks: tuple[torch.Tensor, torch.Tensor] | None = None):  # fmt: skip
        """``memory [B, M, H]`` (first pass only; later passes find it in ``past``) and ``memory_mask [B, M]``
        (every pass, True on real text tokens) when the model attends to text tokens; ``"separate"`` takes the
        text keys' ``models.text.separate_text_masks`` instead of ``memory_mask`` (every pass, computed once per
        forward)."""
        batch, steps, width = x.shape
        heads = self.num_heads
        dropout = self.dropout if self.training else 0.0
        q, k, v = self.qkv(x).view(batch, steps, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        separate = separate_masks is not None
        text_kv = None  # "separate": the text keys and values, attended apart from the sequence's
        if memory is not None:
            mk, mv = self.memory_kv(memory).view(batch, -1, 2, heads, width // heads).permute(2, 0, 3, 1, 4)
            if separate:  # a text-less row's values are zero (so are they in the cache): its text attention is 0
                text_kv = (mk, mv * separate_masks[1].to(mv.dtype))
            else:
                k, v = torch.cat([mk, k], dim=2), torch.cat([mv, v], dim=2)
        elif separate:
            text_kv = past[2:4]
        prefix = 0 if memory_mask is None or separate else memory_mask.shape[1]  # "joint": the text keys lead k, v
        past_len = 0
        if past is not None:
            past_len = past[0].shape[2] - prefix
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (k, v) if text_kv is None else (k, v, *text_kv, separate_masks[0])
        if prefix:
            causal = torch.ones(steps, past_len + steps, dtype=torch.bool, device=x.device).tril(past_len)
            text = memory_mask.to(device=x.device, dtype=torch.bool)[:, None, None, :].expand(batch, 1, steps, prefix)
            mask, is_causal = torch.cat([text, causal[None, None].expand(batch, 1, steps, -1)], dim=-1), False
        elif past_len == 0:
            mask, is_causal = None, True
        elif steps == 1:
            mask, is_causal = None, False  # one new token attends to everything before it
        else:
            mask, is_causal = torch.ones(steps, past_len + steps, dtype=torch.bool, device=x.device).tril(past_len), False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
        if text_kv is not None:  # the text keys in a softmax of their own, added
            # cuDNN's kernel runs half precision only; elsewhere the context's Python cost (~10-40 us) is all it adds
            half = q.dtype in (torch.float16, torch.bfloat16)
            with sdpa_kernel(TEXT_ATTENTION_BACKENDS) if self.training and half else nullcontext():
                y = y + F.scaled_dot_product_attention(q, *text_kv, attn_mask=separate_masks[0], dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch, steps, width)
        return self.resid_dropout(self.proj(y)), present


class GPTBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, ff_mult: int, dropout: float, text_memory: bool = False,
                 text_attention: str = "joint"):  # fmt: skip
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden_size), nn.LayerNorm(hidden_size)
        self.ln_memory = nn.LayerNorm(hidden_size) if text_memory else None
        self.attn = CausalSelfAttention(hidden_size, num_heads, dropout, text_memory, text_attention)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, ff_mult * hidden_size), nn.GELU(), nn.Linear(ff_mult * hidden_size, hidden_size), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, past=None, memory=None, memory_mask=None, separate_masks=None):
        memory = self.ln_memory(memory) if memory is not None else None
        attended, present = self.attn(self.ln1(x), past, memory, memory_mask, separate_masks)
        x = x + attended
        return x + self.mlp(self.ln2(x)), present


@dataclass
class GPTLosses:
    loss: torch.Tensor  # token cross-entropy (codes and end token)
    accuracy: torch.Tensor  # next-token accuracy on valid positions


class T2MGPT(ModelMixin, ConfigMixin):
    """Causal transformer over ``[text token; motion codes; end token]``.

    Position 0 holds the pooled sentence embedding projected to ``hidden_size``; position ``i`` holds code
    ``i - 1``; the logits at position ``i`` score code ``i`` or the end token (index ``num_codes``). Index
    ``num_codes + 1`` pads targets after the end token (ignored by the loss, never predicted).

    Args:
        num_codes: size of the VQ-VAE codebook the GPT speaks.
        text_dim: width of the pooled text embedding (384 for all-MiniLM-L6-v2; upstream used CLIP's 512).
        hidden_size, num_layers, num_heads, ff_mult, dropout: transformer size. Presets: ``tiny`` (2 x 128,
            CPU minutes) and ``paper`` (8 x 512). The HumanML3D default is 18 layers x 1024 (~230M
            parameters for 23k clips); Express4D has ~1.2k clips, on which that size memorises the training
            set, so the ``paper`` preset is ~10x smaller with stronger dropout (see ``GPT_PRESETS``).
        max_codes: longest code sequence (196 frames / 4 = 49).
        text_conditioning: ``"pooled"`` (upstream: the pooled sentence vector as the first token) or
            ``"tokens"`` (order-aware: that first token plus, in every layer, the text encoder's token states
            as extra keys/values; ``forward`` then needs ``text_token_states`` and ``text_mask``).
        text_attention: how the codes attend to the token states (``"tokens"`` only; see ``TEXT_ATTENTIONS``):
            ``"joint"`` (the default, so older folders load as trained): one softmax over text and code keys.
            ``"separate"`` (the ``*_order`` presets): the text keys in a softmax of their own, added.
        max_text_tokens: longest token sequence the text positions cover (``"tokens"`` only).
        text_token_dim: width of the token states (``"tokens"`` only; None = ``text_dim``).
    """

    @register_to_config
    def __init__(
        self,
        num_codes: int = 512,
        text_dim: int = 384,
        hidden_size: int = 512,
        num_layers: int = 8,
        num_heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.2,
        max_codes: int = MAX_FRAMES // 4,
        text_conditioning: str = "pooled",
        max_text_tokens: int = 64,
        text_token_dim: int | None = None,
        text_attention: str = "joint",
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if text_conditioning not in TEXT_CONDITIONINGS:
            raise ValueError(f"text_conditioning must be one of {TEXT_CONDITIONINGS}, got {text_conditioning!r}")
        if text_attention not in TEXT_ATTENTIONS:
            raise ValueError(f"text_attention must be one of {TEXT_ATTENTIONS}, got {text_attention!r}")
        self.uses_text_tokens = text_conditioning == "tokens"
        self.text_proj = nn.Linear(text_dim, hidden_size)
        if self.uses_text_tokens:
            self.text_token_proj = nn.Linear(text_token_dim or text_dim, hidden_size)
            self.text_position_embedding = nn.Parameter(torch.zeros(1, max_text_tokens, hidden_size))
        self.code_embedding = nn.Embedding(num_codes + 2, hidden_size)  # codes, end, pad
        self.position_embedding = nn.Parameter(torch.zeros(1, max_codes + 1, hidden_size))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            GPTBlock(hidden_size, num_heads, ff_mult, dropout, self.uses_text_tokens, text_attention) for _ in range(num_layers)
        )
        self.ln_f = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_codes + 1, bias=False)  # codes + end
        self.apply(self._init_weights)
        if self.uses_text_tokens:
            nn.init.normal_(self.text_position_embedding, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> T2MGPT:
        if preset not in GPT_PRESETS:
            raise ValueError(f"unknown GPT preset {preset!r}; choose one of {sorted(GPT_PRESETS)}")
        return cls(**{**GPT_PRESETS[preset], **overrides})

    @property
    def end_token_id(self) -> int:
        return self.config.num_codes

    @property
    def pad_token_id(self) -> int:
        return self.config.num_codes + 1

    def forward(self, codes: torch.Tensor, text_embeds: torch.Tensor | None = None, past_key_values=None,
                use_cache: bool = False, text_token_states: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None):  # fmt: skip
        """Next-token logits.

        Without ``past_key_values``: the sequence is ``[text token; codes]`` and the logits are
        ``[B, S + 1, num_codes + 1]`` (``text_embeds [B, text_dim]`` required). With a cache: ``codes`` are the
        new tokens only and the logits ``[B, S, num_codes + 1]`` continue where the cache stops.
        The order-aware variant also needs ``text_token_states [B, L, text_dim]`` on the first pass and
        ``text_mask [B, L]`` (True on real tokens; None = all real) on every pass.
        Returns ``(logits, cache)``; the cache is a list of per-layer ``(keys, values)`` when ``use_cache``.
        """
        memory, prefix = None, 0
        if self.uses_text_tokens:
            if text_mask is None:
                if text_token_states is None:
                    raise ValueError("this T2MGPT is order-aware (text_conditioning='tokens'): pass text_token_states "
                                     "on the first pass and text_mask on every pass")  # fmt: skip
                text_mask = torch.ones(text_token_states.shape[:2], dtype=torch.bool, device=codes.device)
            prefix = text_mask.shape[1]
            if prefix > self.config.max_text_tokens:
                raise ValueError(f"{prefix} text tokens; the model covers at most {self.config.max_text_tokens}")
            if past_key_values is None:
                if text_token_states is None or text_token_states.shape[:2] != text_mask.shape:
                    raise ValueError("the first pass needs text_token_states [B, L, text_dim] matching text_mask [B, L]")
                states = text_token_states.to(self.text_token_proj.weight.dtype)
                memory = self.text_token_proj(states * text_mask[..., None].to(states.dtype))
                memory = memory + self.text_position_embedding[:, :prefix]
        separate = self.uses_text_tokens and self.config.text_attention == "separate"
        # the sequence's position after the cache; "joint" caches the text keys ahead of it
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2] - (0 if separate else prefix)
        x = self.code_embedding(codes)
        if past_key_values is None:
            if text_embeds is None:
                raise ValueError("text_embeds is required for the first forward pass (no cache)")
            x = torch.cat([self.text_proj(text_embeds.to(x.dtype)).unsqueeze(1), x], dim=1)
        if past_len + x.shape[1] > self.position_embedding.shape[1]:
            raise ValueError(f"sequence of {past_len + x.shape[1]} tokens exceeds the model's {self.position_embedding.shape[1]}")
        x = self.drop(x + self.position_embedding[:, past_len : past_len + x.shape[1]])
        if memory is not None:
            memory = self.drop(memory.to(x.dtype))
        separate_masks = None
        if separate and past_key_values is not None:  # the text is that of the first pass: so is its mask
            separate_masks = (past_key_values[0][4], None)
        elif separate:
            separate_masks = separate_text_masks(text_mask.to(device=x.device, dtype=torch.bool), attention_dtype(x))
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, None if past_key_values is None else past_key_values[i], memory,
                               text_mask if self.uses_text_tokens else None, separate_masks)  # fmt: skip
            presents.append(present)
        logits = self.head(self.ln_f(x))
        return logits, (presents if use_cache else None)

    def corrupt_codes(self, codes: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Upstream's corruption trick: replace each input code by a random code with probability ``tau``."""
        if tau <= 0:
            return codes
        replace = torch.rand(codes.shape, device=codes.device, generator=generator) < tau
        random_codes = torch.randint(0, self.config.num_codes, codes.shape, device=codes.device, generator=generator)
        return torch.where(replace & (codes < self.config.num_codes), random_codes, codes)

    def training_sequences(self, codes: torch.Tensor, lengths: torch.Tensor, tau: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs [B, S], targets [B, S + 1])`` for teacher forcing of ``[codes; end]``.

        ``codes [B, S]`` are valid up to ``lengths``; targets hold the end token at ``lengths`` and the pad
        index after it; inputs are the targets shifted right (the text token comes first), corrupted with
        probability ``tau`` (upstream's trick against exposure bias).
        """
        batch, steps = codes.shape
        positions = torch.arange(steps + 1, device=codes.device)[None]
        target = torch.cat([codes, codes.new_full((batch, 1), self.pad_token_id)], dim=1)
        target = torch.where(positions < lengths[:, None], target, self.pad_token_id)
        target = torch.where(positions == lengths[:, None], self.end_token_id, target)
        return self.corrupt_codes(target[:, :-1], tau), target

    def loss_from_logits(self, logits: torch.Tensor, target: torch.Tensor) -> GPTLosses:
        """Token cross-entropy (codes and end token; pads ignored) and next-token accuracy."""
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=self.pad_token_id)
        valid = target != self.pad_token_id
        accuracy = ((logits.argmax(-1) == target) & valid).sum() / valid.sum().clamp_min(1)
        return GPTLosses(loss, accuracy.float())

    def compute_loss(self, codes: torch.Tensor, lengths: torch.Tensor, text_embeds: torch.Tensor, tau: float = 0.0,
                     text_token_states: torch.Tensor | None = None, text_mask: torch.Tensor | None = None) -> GPTLosses:  # fmt: skip
        """Cross-entropy of ``[codes; end]`` given the text; ``codes [B, S]`` valid up to ``lengths``."""
        inputs, target = self.training_sequences(codes, lengths, tau if self.training else 0.0)
        logits, _ = self(inputs, text_embeds, text_token_states=text_token_states, text_mask=text_mask)
        return self.loss_from_logits(logits, target)

    @torch.no_grad()
    def generate(
        self,
        text_embeds: torch.Tensor,
        *,
        min_codes: list[int] | int = MIN_CODES,
        max_codes: list[int] | int = MAX_FRAMES // 4,
        stop_at_end: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        use_cache: bool = True,
        on_token=None,
        prefix_codes: torch.Tensor | None = None,
        text_token_states: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Sample one code sequence per row of ``text_embeds [B, text_dim]`` (batched, in lockstep).

        The end token is suppressed until a row has ``min_codes`` codes; a row stops at its end token or at
        ``max_codes`` codes. Rows with ``min_codes == max_codes`` therefore get exactly that many codes (forced
        length). ``temperature == 0`` is greedy. ``generator`` may be one generator or one per row.
        ``on_token(step, {"tokens", "finished", "lengths"})``, when given, runs after every generated token with
        the codes so far ``[B, step + 1]`` (rows already finished carry filler codes past their length), which
        rows have finished and their lengths; it may return a dict with new ``"tokens"`` (same shape) to steer
        the sampling, or ``{"stop": True}`` to end every row now.
        ``prefix_codes`` ``[B, P]`` (codes in ``[0, num_codes)``) continues given codes: they are fed after the text
        token and sampling starts at position ``P`` (``min_codes`` / ``max_codes`` count them; ``max_codes > P``).
        The order-aware variant needs ``text_token_states [B, L, H]`` and ``text_mask [B, L]`` too.
        Returns a list of 1-D long tensors (codes only, no end token; the prefix included).
        """
        batch = text_embeds.shape[0]
        device = text_embeds.device
        min_codes = torch.as_tensor([min_codes] * batch if isinstance(min_codes, int) else list(min_codes), device=device)
        max_codes = torch.as_tensor([max_codes] * batch if isinstance(max_codes, int) else list(max_codes), device=device)
        if int(max_codes.max()) > self.config.max_codes:
            raise ValueError(f"max_codes {int(max_codes.max())} exceeds the model's {self.config.max_codes}")
        if bool((min_codes > max_codes).any()) or int(max_codes.min()) < 1:
            raise ValueError("need 1 <= min_codes <= max_codes for every row")
        lengths = max_codes.clone()
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens = torch.empty(batch, 0, dtype=torch.long, device=device)
        if prefix_codes is not None:
            tokens = torch.as_tensor(prefix_codes, dtype=torch.long, device=device).reshape(batch, -1)
            if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.num_codes):
                raise ValueError(f"prefix codes must lie in [0, {self.config.num_codes})")
            if int(max_codes.min()) <= tokens.shape[1]:
                raise ValueError(f"max_codes must exceed the {tokens.shape[1]} prefix codes for every row")
        cache = None
        if self.uses_text_tokens and text_mask is None and text_token_states is not None:
            text_mask = torch.ones(text_token_states.shape[:2], dtype=torch.bool, device=device)
        for step in range(tokens.shape[1], int(max_codes.max())):
            if use_cache:
                new = tokens if cache is None else tokens[:, -1:]
                logits, cache = self(new, text_embeds if cache is None else None, past_key_values=cache, use_cache=True,
                                     text_token_states=text_token_states if cache is None else None, text_mask=text_mask)  # fmt: skip
            else:
                logits, _ = self(tokens, text_embeds, text_token_states=text_token_states, text_mask=text_mask)
            logits = logits[:, -1].float()
            logits[:, self.end_token_id] = torch.where(
                step < min_codes, torch.full_like(logits[:, 0], -math.inf), logits[:, self.end_token_id]
            )
            if not stop_at_end:
                logits[:, self.end_token_id] = -math.inf
            next_token = sample_from_logits(logits, temperature, top_k, top_p, generator)
            ended = (next_token == self.end_token_id) & ~finished
            lengths = torch.where(ended, torch.full_like(lengths, step), lengths)
            finished |= ended | (step + 1 >= max_codes)
            # rows that are done keep feeding a valid code so the lockstep batch stays well-formed
            next_token = torch.where(next_token == self.end_token_id, torch.zeros_like(next_token), next_token)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            if on_token is not None:
                changes = on_token(step, {"tokens": tokens, "finished": finished, "lengths": lengths}) or {}
                new = changes.get("tokens")
                if new is not None and new is not tokens:
                    if tuple(new.shape) != tuple(tokens.shape):
                        raise ValueError(f"the step callback returned tokens of shape {tuple(new.shape)}, expected {tuple(tokens.shape)}")
                    if not torch.equal(new, tokens):
                        tokens, cache = new.to(device=device, dtype=torch.long), None  # recompute from the new codes
                if changes.get("stop"):
                    lengths = torch.where(finished, lengths, torch.full_like(lengths, step + 1))
                    break
            if bool(finished.all()):
                break
        return [tokens[i, : int(lengths[i])] for i in range(batch)]


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and/or the smallest set whose probability reaches ``top_p``."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # the first token is always kept
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return logits


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    """One token per row of ``logits [B, V]``; ``temperature == 0`` picks the argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    if isinstance(generator, (list, tuple)):
        if len(generator) != len(probs):
            raise ValueError(f"got {len(generator)} generators for {len(probs)} sequences")
        return torch.cat([_multinomial(p[None], g) for p, g in zip(probs, generator)])
    return _multinomial(probs, generator)


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Draw on the generator's device (a CPU generator gives the same samples whatever device runs the model)."""
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.to(generator.device), 1, generator=generator)[:, 0].to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
