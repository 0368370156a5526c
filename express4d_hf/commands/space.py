"""``express4d space``: write a complete Hugging Face Space folder for the app, and push it."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "space",
        help="build and push the Hugging Face Space of the app",
        description="Write a complete Hugging Face Space folder that runs the Express4D app (the one `express4d demo` "
        "runs) and push it. Without --models the Space trains the tiny baselines on the embedded corpus at start-up.",
    )
    parser.set_defaults(_parser=parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    build = verbs.add_parser(
        "build",
        help="write a pushable Space folder",
        description="Write OUT: README.md (front matter filled: title, sdk and version, python version, models, datasets, "
        "licence, tags), app.py (these models and data as defaults), requirements.txt pinned to the installed "
        "versions (torch's CPU wheels), screenshot.jpg and a copy of the express4d_hf package; local pipeline folders "
        "are copied into OUT/models/. Push it with `express4d space push OUT REPO_ID` (or `hf upload REPO_ID OUT . "
        "--repo-type space`).",
        epilog="example: express4d space build space/ --models me/express4d-mdm --models me/express4d-t2m-gpt --data me/express4d",
    )
    build.add_argument("out_dir", metavar="OUT", help="the folder to write (new or empty, or --overwrite)")
    build.add_argument("--models", action="append", default=[], metavar="REPO_OR_DIR",
                       help="a Hub model repo id or a local pipeline folder; repeat or comma-separate (default: none, "
                       "the Space trains the tiny baselines at start-up)")  # fmt: skip
    build.add_argument("--data", default=None, metavar="REPO_ID", help="Hub dataset id Browse shows (default: the procedural corpus)")
    build.add_argument("--space-id", default=None, metavar="REPO_ID", help="the Space's id, for the API example (push fills it too)")
    build.add_argument("--title", default="Express4D", help="the Space's title (default Express4D)")
    build.add_argument("--gpu-torch", action="store_true", help="do not prefer torch's CPU wheels (for a GPU Space)")
    build.add_argument("--overwrite", action="store_true", help="replace OUT if it holds files")
    build.set_defaults(func=_build)

    push = verbs.add_parser(
        "push",
        help="upload a Space folder to the Hub",
        description="Create the Gradio Space REPO_ID if needed and upload OUT (written by `express4d space build`) in "
        "one commit. Log in first with `hf auth login`. --dry-run lists the files without any network access.",
    )
    push.add_argument("out_dir", metavar="OUT", help="a folder written by `express4d space build`")
    push.add_argument("repo_id", metavar="REPO_ID", help="Space id, owner/name")
    push.add_argument("--private", action="store_true", help="create the Space private")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    push.set_defaults(func=_push)


def _build(args: argparse.Namespace) -> int:
    from ..apps.space import build_space_folder

    models = [m.strip() for item in args.models for m in item.split(",") if m.strip()]
    out = build_space_folder(args.out_dir, models, data=args.data, space_id=args.space_id, title=args.title,
                             overwrite=args.overwrite, cpu_torch=not args.gpu_torch)  # fmt: skip
    what = ", ".join(models) if models else "no models: trains the tiny baselines at start-up"
    print(f"wrote the Space folder {out} ({what}); next: express4d space push {out} OWNER/NAME")
    return 0


def _push(args: argparse.Namespace) -> int:
    from ..apps.space import push_space_folder

    push_space_folder(args.out_dir, args.repo_id, private=args.private, dry_run=args.dry_run)
    return 0
