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


def edit_curves_figure(
    before: FaceMotion,
    after: FaceMotion,
    kept: np.ndarray | None = None,
    channels: list[str] | None = None,
    top_k: int = 4,
    title: str | None = None,
):
    """Before/after curves of an edit: the source (dashed) and the edited motion (solid), one colour per channel.

    ``kept`` is the edit's ``[frames, 61]`` bool mask at ``after``'s rate: the top panel shows the most active kept
    channels (they coincide), the bottom one the channels that changed most, and frames kept on every channel are
    shaded. ``channels`` picks the channels of the bottom panel instead.
    """
    from matplotlib.figure import Figure

    source = before.resample(after.fps) if before.fps != after.fps else before
    frames = min(source.num_frames, after.num_frames)
    seconds = np.arange(after.num_frames) / float(after.fps)
    kept = np.zeros((after.num_frames, len(CHANNELS)), bool) if kept is None else np.asarray(kept, bool)[: after.num_frames]
    change = np.abs(after.values[:frames] - source.values[:frames]).mean(axis=0) if frames else np.zeros(len(CHANNELS))
    kept_channels = kept[:frames].all(axis=0) if frames else np.zeros(len(CHANNELS), bool)
    spread = source.values[:frames].std(axis=0) if frames else np.zeros(len(CHANNELS))
    top = [CHANNELS[i] for i in np.argsort(-spread, kind="stable") if kept_channels[i] and spread[i] > 0][:3]
    bottom = list(channels) if channels is not None else [
        CHANNELS[i] for i in np.argsort(-(change + after.values.std(axis=0)), kind="stable") if not kept_channels[i]
    ][:top_k]  # fmt: skip
    panels = [(f"kept from the source ({len(top)} of {int(kept_channels.sum())} kept channels)", top)] if top else []
    panels.append(("generated from the prompt", bottom))
    fig = Figure(figsize=(8, 2.4 + 2.1 * len(panels)), dpi=110)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i}" for i in range(10)]
    shaded = kept.all(axis=1)
    for ax, (label, names) in zip(axes, panels):
        for k, name in enumerate(names):
            index = CHANNELS.index(name)
            ax.plot(seconds[:frames], source.values[:frames, index], ls="--", lw=1.2, color=colours[k % 10], alpha=0.75)
            ax.plot(seconds, after.values[:, index], lw=1.6, color=colours[k % 10], label=name)
        if shaded.any():
            ax.fill_between(seconds, 0, 1, where=shaded, transform=ax.get_xaxis_transform(), color="grey", alpha=0.15, lw=0)
        ax.set_ylabel("ARKit value")
        ax.set_title(label, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=7, ncol=2, loc="upper right", framealpha=0.8)
    axes[-1].set_xlabel("time (s)   dashed: before (source), solid: after (edited)" + ("; grey: kept spans" if shaded.any() else ""))
    axes[-1].set_xlim(0, max(seconds[-1] if len(seconds) else 0.0, 1.0 / after.fps))
    heading = title if title is not None else (f"Edit: {after.caption}" if after.caption else "")
    if heading:
        fig.suptitle("\n".join(textwrap.wrap(heading, 80)[:2]), fontsize=10)
    fig.tight_layout()
    return fig


def plot_edit_curves(before: FaceMotion, after: FaceMotion, path: str | os.PathLike, kept: np.ndarray | None = None,
                     **kwargs) -> Path:  # fmt: skip
    """Save :func:`edit_curves_figure` as a PNG at ``path`` (atomically); return the path."""
    path = Path(path)
    fig = edit_curves_figure(before, after, kept=kept, **kwargs)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
