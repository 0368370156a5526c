"""``express4d train <model>``: each trainer module registers its own sub-verb."""

from __future__ import annotations

import importlib

# Modules under express4d_hf.training, each with `add_train_command(subparsers)`.
TRAIN_MODULES: list[str] = []


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train the evaluator or a baseline with accelerate")
    parser.set_defaults(_parser=parser)
    verbs = parser.add_subparsers(dest="model", metavar="MODEL")
    for name in TRAIN_MODULES:
        importlib.import_module(f"express4d_hf.training.{name}").add_train_command(verbs)


def add_common_train_arguments(parser, default_out: str) -> None:
    """Arguments every `express4d train ...` verb shares."""
    parser.add_argument("--data", default=None, help="release folder, built dataset folder or hub id (default: embedded procedural corpus)")
    parser.add_argument("--out", default=default_out, help=f"output folder, loadable with from_pretrained (default: {default_out})")
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="model/training size (tiny: CPU minutes; paper: one GPU)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist in --out")
