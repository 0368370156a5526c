"""``MotionNormalizer``: the normalisation stats as a pipeline component, so they travel with a model."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..core.arkit import NUM_CHANNELS
from ..core.stats import DEFAULT_EPS, NormStats


class MotionNormalizer(ModelMixin, ConfigMixin):
    """Holds per-channel ``mean``/``std`` buffers (saved as safetensors) and maps raw <-> normalised motion.

    Config:
        fps: the rate of the motion the model reads and writes (a pipeline's output rate).
        eps: the floor the std was clamped to (0: the stats are used exactly as given, e.g. the official release's).
        stats_fps: the rate the stats were computed at, when it differs from ``fps`` (the official release's
            stats are computed over 60 fps captures while its model runs at 20 fps); None = ``fps``.
        source: where the stats came from (free text, recorded for the model card).
    """

    @register_to_config
    def __init__(self, num_channels: int = NUM_CHANNELS, fps: float = 20.0, eps: float = DEFAULT_EPS,
                 stats_fps: float | None = None, source: str | None = None):  # fmt: skip
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_channels))
        self.register_buffer("std", torch.ones(num_channels))

    @classmethod
    def from_stats(cls, stats: NormStats, fps: float | None = None, source: str | None = None) -> MotionNormalizer:
        """A normaliser holding ``stats``; ``fps`` (default: the stats' rate) is the model's motion rate, kept apart
        from the rate the stats were computed at."""
        model_fps = float(stats.fps if fps is None else fps)
        stats_fps = None if float(stats.fps) == model_fps else float(stats.fps)
        normalizer = cls(num_channels=len(stats.mean), fps=model_fps, eps=stats.eps, stats_fps=stats_fps, source=source)
        normalizer.mean.copy_(torch.from_numpy(stats.mean))
        normalizer.std.copy_(torch.from_numpy(stats.std))
        return normalizer

    def to_stats(self) -> NormStats:
        fps = self.config.fps if self.config.stats_fps is None else self.config.stats_fps
        return NormStats(self.mean.cpu().numpy(), self.std.cpu().numpy(), fps=fps, eps=self.config.eps)

    def normalize(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.mean.to(motion.dtype)) / self.std.to(motion.dtype)

    def denormalize(self, motion: torch.Tensor) -> torch.Tensor:
        return motion * self.std.to(motion.dtype) + self.mean.to(motion.dtype)
