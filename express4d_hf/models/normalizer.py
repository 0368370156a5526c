"""``MotionNormalizer``: the normalisation stats as a pipeline component, so they travel with a model."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..arkit import NUM_CHANNELS
from ..data.stats import DEFAULT_EPS, NormStats


class MotionNormalizer(ModelMixin, ConfigMixin):
    """Holds per-channel ``mean``/``std`` buffers (saved as safetensors) and maps raw <-> normalised motion."""

    @register_to_config
    def __init__(self, num_channels: int = NUM_CHANNELS, fps: float = 20.0, eps: float = DEFAULT_EPS):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_channels))
        self.register_buffer("std", torch.ones(num_channels))

    @classmethod
    def from_stats(cls, stats: NormStats) -> MotionNormalizer:
        normalizer = cls(num_channels=len(stats.mean), fps=stats.fps, eps=stats.eps)
        normalizer.mean.copy_(torch.from_numpy(stats.mean))
        normalizer.std.copy_(torch.from_numpy(stats.std))
        return normalizer

    def to_stats(self) -> NormStats:
        return NormStats(self.mean.cpu().numpy(), self.std.cpu().numpy(), fps=self.config.fps, eps=self.config.eps)

    def normalize(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.mean.to(motion.dtype)) / self.std.to(motion.dtype)

    def denormalize(self, motion: torch.Tensor) -> torch.Tensor:
        return motion * self.std.to(motion.dtype) + self.mean.to(motion.dtype)
