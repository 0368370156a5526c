"""Prompt -> FaceMotion pipelines in the diffusers format, one file per pipeline (no training code)."""

from .common import MotionPipelineOutput

__all__ = ["MotionPipelineOutput"]
