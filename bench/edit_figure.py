"""The README's before/after picture of an edit: keep the upper face of a take, regenerate the mouth.

The model is the tiny MDM denoiser the editing tests train on their toy corpus (three instructions, each raising
its own lower-face channels, over brow and blink motion that ignores the instruction; about a CPU minute), so the
picture shows what editing does, not the quality of a benchmark model. The take is a toy "pressing the lips"
performance captured at 60 fps; the edit keeps its upper face and asks for a broad smile.

    python bench/edit_figure.py docs/figures/edit_before_after.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(out: str = "docs/figures/edit_before_after.png") -> None:
    from test_mdm_editing import TOY_PROMPTS, toy_clip, train_toy_pipeline

    from express4d_hf.core.motion import FaceMotion
    from express4d_hf.export.plotting import plot_edit_curves
    from express4d_hf.models.text import load_text_encoder
    from express4d_hf.pipelines.editing import prepare_edit, seam_step_report

    torch.set_num_threads(1)
    pipe = train_toy_pipeline(load_text_encoder())
    take = FaceMotion(toy_clip("press", 240, np.random.default_rng(7), fps=60), fps=60, caption=TOY_PROMPTS["press"])
    keep = dict(keep_channels="upper_face", keep_frames=[(0.0, 0.75)])
    edited = pipe(TOY_PROMPTS["smile"], motion=take, num_inference_steps=50, generator=torch.Generator().manual_seed(0),
                  **keep).motions[0]  # fmt: skip
    plan = prepare_edit(take, edited.num_frames, edited.fps, **keep)
    channels = ["MouthSmileLeft", "MouthSmileRight", "MouthPressLeft", "MouthRollLower"]
    plot_edit_curves(take, edited, out, kept=plan.kept, channels=channels,
                     title=f"Kept: upper face + first 0.75 s of '{take.caption}'.  New: '{edited.caption}'")  # fmt: skip
    reference = take.resample(edited.fps).values
    print(out, "kept max |diff|:", float(np.abs(edited.values[plan.kept] - reference[plan.kept]).max()),
          "seam:", seam_step_report(edited.values, reference, plan.seams))  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
