"""``express4d generate``: text -> Live Link Face CSV (60 fps) + JSON + curves PNG with any saved pipeline."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from ..core.constants import DIFFUSION_SAMPLERS
from ..livelink import write_livelink_csv
from .arguments import device, finite_float, positive_float, positive_int, unit_float

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate facial motion from text with a trained model folder",
        description="Generate an ARKit facial performance for each PROMPT with a pipeline folder (MDM or T2M-GPT, "
        "as written by `express4d train`). For every motion it writes a Live Link Face CSV at 60 fps (import it in "
        "Unreal, Blender or Maya), a JSON (FaceMotion.to_dict, 20 fps), a PNG of the most active channels and, with "
        "--glb, the animated head as binary glTF. Generated blendshapes are clamped to [0, 1] in every file, the "
        "range Live Link importers expect (head and eye rotations are untouched; --raw keeps the model's values). "
        "--prompts FILE generates one take per line, in batches; motion k is seeded with SEED + k, so a take does not "
        "depend on the batch it is generated in. Options a pipeline does not take (e.g. --guidance for T2M-GPT) are "
        "ignored with a note.",
        epilog='example: express4d generate "A person is squinting and then smiling" --model runs/mdm --duration 4 '
        "--out out/ --glb",
    )
    parser.add_argument("prompts", nargs="*", metavar="PROMPT", help='a description, e.g. "A person is smiling softly"')
    parser.add_argument("--prompts", dest="prompts_file", default=None, metavar="FILE",
                        help="a text file with one prompt per line (blank lines and lines starting with # skipped); "
                        "its prompts follow any PROMPT given")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=16, help="prompts generated together (default 16)")
    parser.add_argument("--glb", action="store_true", help="also write the animated Face Cap head (.glb, licence notice beside it)")
    parser.add_argument("--raw", action="store_true",
                        help="keep the model's raw blendshape values (default: clamped to [0, 1] on export)")  # fmt: skip
    parser.add_argument("--model", required=True, metavar="DIR", help="pipeline folder (model_index.json) or Hub id")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="output folder, or a .csv path (the .json and .png go next to it)")  # fmt: skip
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                        help="length in seconds, 1 to 9.8 (default: the pipeline's; MDM: 9.8 s, T2M-GPT: its own choice)")  # fmt: skip
    length.add_argument("--frames", type=positive_int, default=None, help="length in frames at 20 fps, 20 to 196")
    parser.add_argument("--steps", type=positive_int, default=None, help="denoising steps (diffusion pipelines; default 50)")
    parser.add_argument(
        "--guidance", type=finite_float, default=None, help="classifier-free guidance scale (default 2.5; 1 = off)"
    )
    parser.add_argument("--guidance-rescale", type=unit_float, default=None,
                        help="pull the guided motion's spread back towards the conditional one's, 0..1 (MDM; default 0; 0.7 measured best for the paper-size model)")  # fmt: skip
    parser.add_argument("--eta", type=unit_float, default=None, help="DDIM's per-step noise share, 0..1 (MDM with ddim; default 0)")
    parser.add_argument("--scheduler", choices=["saved", *DIFFUSION_SAMPLERS], default="ddim",
                        help="sampler of a diffusion pipeline (default: ddim; 'saved' keeps the folder's, DDPM for MDM)")  # fmt: skip
    parser.add_argument("--negative-prompt", default=None, help="text to steer away from (diffusion pipelines)")
    parser.add_argument("--num-motions", type=positive_int, default=1, help="motions per prompt (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", type=device, default=None, help="torch device (default: cuda when available, else cpu)")
    add_edit_arguments(parser)
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
    from ..export.plotting import caption_slug

    return [out / f"{k:02d}_{caption_slug(caption)}.csv" for k, caption in enumerate(captions)]


def read_prompts_file(path: str | Path) -> list[str]:
    """The prompts of a ``--prompts`` file: one per line, blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--prompts {path}: cannot be read ({err})") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"--prompts {path}: holds no prompt (one per line)")
    return prompts


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..cli import CommandError
    from ..pipelines.common import check_prompts, clamp_blendshapes
    from ..pipelines.loading import load_pipeline
    from ..export.plotting import plot_channel_curves

    prompts = list(args.prompts) + (read_prompts_file(args.prompts_file) if args.prompts_file else [])
    check_edit_arguments(args, prompts)
    if not prompts and not args.timeline:
        raise CommandError("give at least one PROMPT or --prompts FILE (or --timeline SCRIPT)")
    try:
        check_prompts(prompts or ["(timeline)"])
    except ValueError as err:
        raise CommandError(str(err)) from None
    if args.num_motions < 1:
        raise CommandError(f"--num-motions must be at least 1, got {args.num_motions}")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
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
    if args.timeline or args.edit:
        motions = run_edit(pipe, args, prompts, kwargs)
    else:
        frames = kwargs.pop("num_frames", None)
        durations = kwargs.pop("duration_s", None)
        per_prompt = args.num_motions
        motions = []
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            first = start * per_prompt  # motion k (prompt-major, over the whole run) is seeded with seed + k
            generators = [torch.Generator().manual_seed(args.seed + first + k) for k in range(len(batch) * per_prompt)]
            lengths = {"num_frames": frames} if frames is not None else {"duration_s": durations} if durations is not None else {}
            motions += pipe(batch, generator=generators, **lengths, **kwargs).motions

    paths = output_paths(args.out, [m.caption or "" for m in motions])
    extras = ".json, .png" + (", .glb" if args.glb else "")
    for k, (motion, csv_path) in enumerate(zip(motions, paths)):
        motion = motion.replace(metadata={**motion.metadata, "seed": args.seed + k, "model": str(args.model)})
        write_generated(motion, csv_path, raw=args.raw, glb=args.glb)
        plot_channel_curves(clamp_blendshapes(motion) if not args.raw else motion, csv_path.with_suffix(".png"))
        print(f"{csv_path}  ({motion.num_frames} frames at {motion.fps:g} fps = {motion.duration:.2f} s; "
              f"+ {extras}): {motion.caption}")  # fmt: skip
    return 0


def write_generated(motion, csv_path: Path, raw: bool = False, glb: bool = False) -> list[Path]:
    """Export one generated motion: the Live Link CSV at 60 fps, the JSON at 20 fps and, with ``glb``, the GLB.

    Unless ``raw``, the blendshapes are clamped to [0, 1] in every file (:func:`clamp_blendshapes`); the CSV is
    clamped after resampling to 60 fps, so the resampling filter cannot push a value back out of range.
    """
    from ..core.io import atomic_write_text
    from ..pipelines.common import clamp_blendshapes

    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    at_60 = motion.resample(60)
    if not raw:
        motion, at_60 = clamp_blendshapes(motion), clamp_blendshapes(at_60)
    write_livelink_csv(at_60, csv_path, fps=None)
    written = [csv_path, csv_path.with_suffix(".json")]
    atomic_write_text(written[1], json.dumps(motion.to_dict()) + "\n")
    if glb:
        from ..export.gltf import motion_to_gltf

        written.append(motion_to_gltf(motion, csv_path.with_suffix(".glb"), clamp=not raw))
    return written


# --- editing and timelines -------------------------------------------------------------------------------
def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    edit = parser.add_argument_group(
        "editing and timelines (MDM)",
        "Keep part of a take and generate the rest from the PROMPT, or direct a performance longer than the "
        "model's 9.8 s window from a script.",
    )
    edit.add_argument("--edit", metavar="TAKE", default=None,
                      help="the source performance: a Live Link Face CSV (any fps) or a FaceMotion JSON")  # fmt: skip
    edit.add_argument("--keep", metavar="REGIONS", default=None,
                      help="channels kept from the take, comma-separated regions or channel names: upper_face, "
                           "lower_face, eyes, brows, jaw, mouth, cheeks, nose, tongue, head, eye_rotation, JawOpen, ...")  # fmt: skip
    edit.add_argument("--keep-frames", metavar="SPANS", default=None,
                      help="time spans kept from the take on every channel, in seconds: 0-1,3-4 (in-betweening); "
                           "only a prefix such as 0-2 continues the take (with --duration longer than it)")  # fmt: skip
    edit.add_argument("--seam-blend", type=float, default=None, metavar="SECONDS",
                      help="ramp joining kept spans and generated frames (default 0.25 s; 0 = hard cut)")  # fmt: skip
    edit.add_argument("--timeline", metavar="SCRIPT", default=None,
                      help="a text file with one 'SECONDS<TAB>INSTRUCTION' per line (# comments): one performance of "
                           "every instruction in turn, any length (no PROMPT then)")  # fmt: skip
    edit.add_argument("--transition", type=float, default=None, metavar="SECONDS",
                      help="with --timeline: overlap each window keeps from the previous one (default 1 s)")  # fmt: skip


def check_edit_arguments(args: argparse.Namespace, prompts: list[str]) -> None:
    """One-line errors for combinations of the editing flags that cannot work."""
    from ..cli import CommandError

    if args.timeline:
        if prompts:
            raise CommandError("--timeline takes its instructions from the script: give no PROMPT (or --prompts) with it")
        clash = [flag for flag, value in (("--edit", args.edit), ("--keep", args.keep), ("--keep-frames", args.keep_frames),
                 ("--duration", args.duration), ("--frames", args.frames)) if value is not None]  # fmt: skip
        if clash or args.num_motions != 1:
            raise CommandError(f"--timeline sets the length from the script; drop {', '.join(clash) or '--num-motions'}")
        return
    if args.transition is not None:
        raise CommandError("--transition applies to --timeline only")
    if (args.keep or args.keep_frames or args.seam_blend is not None) and not args.edit:
        raise CommandError("--keep / --keep-frames / --seam-blend edit a take: pass it with --edit TAKE.csv")
    if args.edit and not (args.keep or args.keep_frames):
        raise CommandError("--edit needs what to keep from the take: --keep upper_face (regions or channels) "
                           "and/or --keep-frames 0-1,3-4 (seconds)")  # fmt: skip


def read_take(path: str):
    """A source performance from a Live Link Face CSV or a FaceMotion JSON file."""
    from ..cli import CommandError
    from ..core.motion import FaceMotion
    from ..livelink import read_livelink_csv

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--edit {path}: no such file")
    if file.suffix.lower() == ".json":
        try:
            return FaceMotion.from_dict(json.loads(file.read_text()))
        except (ValueError, KeyError, TypeError) as err:
            raise CommandError(f"--edit {path}: not a FaceMotion JSON ({err})") from None
    return read_livelink_csv(file)


def read_timeline(path: str) -> list[tuple[str, float]]:
    """``[(instruction, seconds), ...]`` of a script file (see :func:`~express4d_hf.pipelines.editing.parse_timeline`)."""
    from ..cli import CommandError
    from ..pipelines.editing import parse_timeline

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--timeline {path}: no such file")
    try:
        return parse_timeline(file.read_text(encoding="utf-8"), source=str(path))
    except ValueError as err:
        raise CommandError(str(err)) from None


def run_edit(pipe, args: argparse.Namespace, prompts: list[str], kwargs: dict[str, Any]) -> list:
    """The motions of an ``--edit`` run (motion k seeded with SEED + k) or a ``--timeline`` (seeded with SEED)."""
    import torch

    from ..cli import CommandError

    if args.timeline:
        if not hasattr(pipe, "compose"):
            raise CommandError(f"--timeline needs an MDM pipeline; {type(pipe).__name__} cannot compose timelines")
        segments = read_timeline(args.timeline)
        settings = {k: v for k, v in kwargs.items() if k not in ("num_frames", "duration_s", "num_motions_per_prompt")}
        if args.seam_blend is not None:
            settings["seam_blend_s"] = args.seam_blend
        if args.transition is not None:
            settings["transition_s"] = args.transition
        return [pipe.compose(segments, generator=torch.Generator().manual_seed(args.seed), **settings)]
    accepted = set(inspect.signature(pipe.__call__).parameters)
    edit: dict[str, Any] = {"motion": read_take(args.edit)}
    if args.keep:
        edit["keep_channels"] = [name.strip() for name in args.keep.split(",") if name.strip()]
    if args.keep_frames:
        edit["keep_frames"] = args.keep_frames
    if args.seam_blend is not None:
        edit["seam_blend_s"] = args.seam_blend
    missing = sorted(k for k in edit if k not in accepted)
    if missing:
        raise CommandError(f"{type(pipe).__name__} cannot edit a take with {', '.join(missing)}; use an MDM pipeline")
    generators = [torch.Generator().manual_seed(args.seed + k) for k in range(len(prompts) * args.num_motions)]
    return pipe(prompts, generator=generators, **kwargs, **edit).motions
