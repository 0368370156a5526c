"""Curve plots of a :class:`~express4d_hf.FaceMotion`: the most active ARKit channels over time.

Used by ``express4d generate``, training samples, the benchmark and the Space. It draws on a bare
matplotlib ``Figure`` (no pyplot state), so it is safe from threads such as a Gradio worker.

>>> import numpy as np, tempfile, os
>>> t = np.linspace(0, 2 * np.pi, 40, dtype=np.float32)
>>> values = np.zeros((40, 61), np.float32); values[:, 23] = np.sin(t) ** 2; values[:, 0] = 0.1 * t
>>> motion = FaceMotion(values, fps=20, caption="A person is smiling")
>>> most_active_channels(motion, top_k=2)
['MouthSmileLeft', 'EyeBlinkLeft']
>>> path = plot_channel_curves(motion, os.path.join(tempfile.mkdtemp(), "curves.png"))
>>> path.stat().st_size > 1000
True
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import numpy as np

from ..core.arkit import CHANNELS
from ..core.io import atomic_path
from ..core.motion import FaceMotion


def caption_slug(text: str | None, limit: int = 40) -> str:
    """A short file-name-safe form of a caption, for sample and export file names.

    >>> caption_slug("A person is smiling, then winks!")
    'a-person-is-smiling-then-winks'
    """
    return re.sub(r"[^a-z0-9]+", "-", (text or "motion").lower()).strip("-")[:limit].strip("-") or "motion"


def most_active_channels(motion: FaceMotion, top_k: int = 8) -> list[str]:
    """Names of the ``top_k`` channels that move most (largest standard deviation over valid frames).

    Channels that never move are left out, so a still face may give fewer than ``top_k`` names.
    """
    values = motion.values[motion.valid] if motion.valid.any() else motion.values
    if len(values) == 0:
        return []
    spread = values.std(axis=0)
    order = np.argsort(-spread, kind="stable")[: max(0, top_k)]
    return [CHANNELS[i] for i in order if spread[i] > 0]


def channel_curves_figure(
    motion: FaceMotion, top_k: int = 8, title: str | None = None, channels: list[str] | None = None
):
    """A matplotlib ``Figure`` of the chosen (default: most active) channels against time in seconds.

    The title is ``title``, else the motion's caption; long captions wrap over two or three lines.
    """
    from matplotlib.figure import Figure

    names = list(channels) if channels is not None else most_active_channels(motion, top_k)
    fig = Figure(figsize=(8, 4), dpi=110)
    ax = fig.add_subplot()
    seconds = np.arange(motion.num_frames) / float(motion.fps)
    for name in names:
        ax.plot(seconds, motion.channel(name), lw=1.4, label=name)
    if not motion.valid.all():  # shade frames without tracking
        invalid = ~motion.valid
        ax.fill_between(seconds, 0, 1, where=invalid, transform=ax.get_xaxis_transform(), color="grey", alpha=0.2, lw=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ARKit value")
    ax.set_xlim(0, max(seconds[-1] if len(seconds) else 0.0, 1.0 / motion.fps))
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=7, ncol=2, loc="upper right", framealpha=0.8)
    heading = title if title is not None else (motion.caption or "")
    if heading:
        ax.set_title("\n".join(textwrap.wrap(heading, 80)[:3]), fontsize=10)
    fig.tight_layout()
    return fig


def plot_channel_curves(motion: FaceMotion, path: str | os.PathLike, top_k: int = 8, title: str | None = None) -> Path:
    """Save the curves of the ``top_k`` most active channels as a PNG at ``path`` (atomically); return the path."""
    path = Path(path)
    fig = channel_curves_figure(motion, top_k=top_k, title=title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
