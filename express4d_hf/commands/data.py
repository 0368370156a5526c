"""``express4d data``: synthesise, build, push and inspect the Express4D dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.constants import TRAIN_FPS
from .arguments import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="build, push and inspect the Express4D dataset",
        description="Turn an Express4D release folder into a Hugging Face dataset (Parquet + card + train-only "
        "stats.json), push it to the Hub, inspect it, or synthesise the procedural corpus.",
    )
    parser.set_defaults(_parser=parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    synth = verbs.add_parser(
        "synth",
        help="write the procedural corpus in the official release layout",
        description="Synthesise an Express4D-format release (CSV takes, captions, train/test split, performers.json) "
        "from procedural faces. Useful to exercise every code path without the gated real data.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (must not exist)")
    synth.add_argument("--num-clips", type=positive_int, default=1205, help="number of takes (default: 1205)")
    synth.add_argument("--participants", type=positive_int, default=18, help="synthetic performers (default: 18)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--no-progress", action="store_true", help="hide progress bars")
    synth.set_defaults(func=_synth)

    build = verbs.add_parser(
        "build",
        help="build the Hugging Face dataset folder of a release",
        description="Validate RELEASE_DIR (every problem is reported at once), then write OUT_DIR atomically: "
        "data/{train,test}-*.parquet, stats.json (train split only, 20 fps), express4d.json and the dataset card "
        "README.md. `datasets.load_dataset(OUT_DIR)` loads the result.",
    )
    build.add_argument("release_dir", metavar="RELEASE_DIR", help="release folder: data/, texts/, train.txt, test.txt")
    build.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    build.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is a dataset folder an earlier build wrote (anything else is refused)")
    build.add_argument("--num-proc", type=positive_int, default=None, help="processes parsing CSVs (default: auto)")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")
    build.set_defaults(func=_build)

    push = verbs.add_parser(
        "push",
        help="upload a built dataset folder to the Hugging Face Hub",
        description="Create (if needed) the dataset repo REPO_ID, set its access gate, then upload OUT_DIR in one "
        "commit. Real Express4D data is gated by default (--gated auto: users accept the terms and fill the access "
        "form before they can download; the gate is set before anything is uploaded); a dataset built from the "
        "procedural corpus is not gated (it carries the project's licence). Log in first with `hf auth login`. "
        "--dry-run lists the files, sizes and settings without any network access.",
    )
    push.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by `express4d data build`")
    push.add_argument("repo_id", metavar="REPO_ID", help="dataset repo id, owner/name")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    push.add_argument("--gated", choices=["auto", "manual", "off"], default=None,
                      help="access gate: auto (requests approved at once), manual (you approve each) or off "
                      "(default: auto for real data, off for the procedural stand-in)")  # fmt: skip
    push.set_defaults(func=_push)

    info = verbs.add_parser(
        "info",
        help="describe a built dataset, a release folder or a Hub dataset",
        description="Print splits, clip counts, duration statistics, caption examples and the normalisation stats.",
    )
    info.add_argument("data", metavar="DIR|REPO_ID", help="built dataset folder, release folder or Hub repo id")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=_info)


def _synth(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir}: exists and is not empty; choose a new folder")
    try:
        from ..data.synthetic import synthesize_release
    except ImportError as err:
        raise FileNotFoundError(f"the procedural corpus generator is not available ({err})") from None
    path = synthesize_release(out_dir, num_clips=args.num_clips, participants=args.participants, seed=args.seed,
                              progress=not args.no_progress)  # fmt: skip
    print(f"wrote {args.num_clips} takes to {path}; next: express4d data build {path} OUT_DIR")
    return 0


def _build(args: argparse.Namespace) -> int:
    from ..data.hub import build_dataset, dataset_summary

    out = build_dataset(args.release_dir, args.out_dir, overwrite=args.overwrite, num_proc=args.num_proc,
                        progress=not args.no_progress)  # fmt: skip
    summary = dataset_summary(out)
    counts = ", ".join(f"{s} {v['num_clips']} clips" for s, v in summary["splits"].items())
    print(f"built {out}: {counts}; fingerprint {summary['fingerprint']}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from ..data.hub import push_dataset

    push_dataset(args.out_dir, args.repo_id, private=args.private, dry_run=args.dry_run, gated=args.gated)
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..data.hub import dataset_summary, is_built_dataset, resolve_dataset_dir, stats_summary_lines
    from ..data.release import is_release_dir, read_release
    from ..core.stats import NormStats

    path = Path(args.data).expanduser()
    if path.is_dir() and not is_built_dataset(path) and is_release_dir(path):
        release = read_release(path)
        summary = {
            "folder": str(path),
            "kind": "release",
            "splits": {
                s: {
                    "num_clips": len(takes),
                    "num_captions": sum(len(t.captions) for t in takes),
                    "num_performers": len({t.performer for t in takes if t.performer is not None}),
                    "caption_examples": [t.captions[0] for t in takes[:3]],
                }
                for s in ("train", "test")
                for takes in [release.split(s)]
            },
            "warnings": release.warnings,
        }
        if args.json:
            print(json.dumps(summary, indent=2))
            return 0
        print(f"Express4D release folder {path} (not built: durations and stats appear after `express4d data build`)")
        _print_splits(summary["splits"])
        for warning in release.warnings:
            print(f"  warning: {warning}")
        return 0

    folder = resolve_dataset_dir(args.data, progress=False)
    summary = dataset_summary(folder)
    stats = NormStats.load(folder / "stats.json")
    summary.update(kind="dataset", stats=stats_summary_lines(stats))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"Express4D dataset {folder}")
    print(f"  fingerprint {summary['fingerprint']}")
    _print_splits(summary["splits"])
    print(f"  stats.json (z-normalisation at {stats.fps:g} fps; models train at {TRAIN_FPS} fps):")
    for line in summary["stats"]:
        print(f"    {line}")
    return 0


def _print_splits(splits: dict) -> None:
    for name, s in splits.items():
        line = f"  {name}: {s['num_clips']} clips, {s['num_captions']} captions"
        if "mean_s" in s:
            line += (f", {s['num_frames']} frames at {'/'.join(f'{f:g}' for f in s['fps'])} fps, duration "
                     f"min {s['min_s']:.2f} s / mean {s['mean_s']:.2f} s / max {s['max_s']:.2f} s, total "
                     f"{s['total_s'] / 60:.1f} min")  # fmt: skip
        if s.get("num_performers"):
            line += f", {s['num_performers']} performers"
        print(line)
        for caption in s["caption_examples"]:
            print(f"      e.g. {caption!r}")
