"""``express4d generate``: text -> Live Link Face CSV (60 fps) + JSON + curves PNG with any saved pipeline."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from ..constants import DIFFUSION_SAMPLERS

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate facial motion from text with a trained model folder",
        description="Generate an ARKit facial performance for each PROMPT with a pipeline folder (MDM or T2M-GPT, "
        "as written by `express4d train`). For every motion it writes a Live Link Face CSV at 60 fps (import it in "
        "Unreal, Blender or Maya), a JSON (FaceMotion.to_dict, 20 fps) and a PNG of the most active channels. "
        "Options a pipeline does not take (e.g. --guidance for T2M-GPT) are ignored with a note.",
        epilog='example: express4d generate "A person is squinting and then smiling" --model runs/mdm --duration 4 '
        "--out out/",
    )
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help='a description, e.g. "A person is smiling softly"')
    parser.add_argument("--model", required=True, metavar="DIR", help="pipeline folder (model_index.json) or Hub id")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="output folder, or a .csv path (the .json and .png go next to it)")  # fmt: skip
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="length in seconds, 1 to 9.8 (default: the pipeline's; MDM: 9.8 s, T2M-GPT: its own choice)")  # fmt: skip
    length.add_argument("--frames", type=int, default=None, help="length in frames at 20 fps, 20 to 196")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (diffusion pipelines; default 50)")
    parser.add_argument(
        "--guidance", type=float, default=None, help="classifier-free guidance scale (default 2.5; 1 = off)"
    )
    parser.add_argument("--guidance-rescale", type=float, default=None,
                        help="pull the guided motion's spread back towards the conditional one's, 0..1 (MDM; default 0; 0.7 measured best for the paper-size model)")  # fmt: skip
    parser.add_argument("--eta", type=float, default=None, help="DDIM's per-step noise share, 0..1 (MDM with ddim; default 0)")
    parser.add_argument("--scheduler", choices=["saved", *DIFFUSION_SAMPLERS], default="ddim",
                        help="sampler of a diffusion pipeline (default: ddim; 'saved' keeps the folder's, DDPM for MDM)")  # fmt: skip
    parser.add_argument("--negative-prompt", default=None, help="text to steer away from (diffusion pipelines)")
    parser.add_argument("--num-motions", type=int, default=1, help="motions per prompt (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.set_defaults(func=_run, _parser=parser)


def output_paths(out: str | Path, captions: list[str]) -> list[Path]:
    """CSV path of each motion: ``OUT`` itself for one motion and a ``.csv`` OUT, ``OUT_<k>.csv`` for several,
    or ``OUT/<k>_<caption slug>.csv`` when OUT is a folder.

    >>> [p.as_posix() for p in output_paths("x/a.csv", ["smile"])], [p.name for p in output_paths("x", ["A smile", "A frown"])]
    (['x/a.csv'], ['00_a-smile.csv', '01_a-frown.csv'])
    """
    out = Path(out)
    if out.suffix.lower() == ".csv":
        if len(captions) == 1:
            return [out]
        return [out.with_name(f"{out.stem}_{k:02d}.csv") for k in range(len(captions))]
    from ..plotting import caption_slug

    return [out / f"{k:02d}_{caption_slug(caption)}.csv" for k, caption in enumerate(captions)]


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..cli import CommandError
    from ..livelink import atomic_write_text
    from ..pipelines.loading import load_pipeline
    from ..plotting import plot_channel_curves

    if args.num_motions < 1:
        raise CommandError(f"--num-motions must be at least 1, got {args.num_motions}")
    if args.out and Path(args.out).exists() and Path(args.out).is_file() and Path(args.out).suffix.lower() != ".csv":
        raise CommandError(f"--out {args.out}: is an existing file; pass a folder or a .csv path")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = load_pipeline(args.model)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=False, leave=False)
    if args.scheduler != "saved" and hasattr(pipe, "scheduler"):
        from ..pipelines.mdm import make_scheduler

        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)

    requested: dict[str, Any] = {
        "num_frames": args.frames, "duration_s": args.duration, "num_inference_steps": args.steps,
        "guidance_scale": args.guidance, "guidance_rescale": args.guidance_rescale, "eta": args.eta,
        "negative_prompt": args.negative_prompt,
        "num_motions_per_prompt": args.num_motions if args.num_motions != 1 else None,
    }  # fmt: skip
    accepted = set(inspect.signature(pipe.__call__).parameters)
    kwargs = {k: v for k, v in requested.items() if v is not None and k in accepted}
    ignored = sorted(k for k, v in requested.items() if v is not None and k not in accepted)
    if ignored:
        logger.warning("%s does not take %s; ignored", type(pipe).__name__, ", ".join(ignored))
    generator = torch.Generator().manual_seed(args.seed)
    motions = pipe(list(args.prompts), generator=generator, **kwargs).motions

    paths = output_paths(args.out, [m.caption or "" for m in motions])
    for motion, csv_path in zip(motions, paths):
        motion = motion.replace(metadata={**motion.metadata, "seed": args.seed, "model": str(args.model)})
        motion.to_livelink_csv(csv_path, fps=60)
        atomic_write_text(csv_path.with_suffix(".json"), json.dumps(motion.to_dict()) + "\n")
        plot_channel_curves(motion, csv_path.with_suffix(".png"))
        print(f"{csv_path}  ({motion.num_frames} frames at {motion.fps:g} fps = {motion.duration:.2f} s; "
              f"+ .json, .png): {motion.caption}")  # fmt: skip
    return 0
