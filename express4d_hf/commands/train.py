"""``express4d train <model>``: each trainer module registers its own sub-verb.

Trainer modules import torch and diffusers, which takes seconds; so ``express4d --help`` lists the verbs
from the light table below and imports a trainer only when its verb runs (or its ``--help`` is asked).
"""

from __future__ import annotations

import argparse
import importlib

from .arguments import OneLineErrorParser, positive_int

# verb -> (module under express4d_hf.training with `add_train_command(subparsers)`, one-line help)
TRAIN_VERBS: dict[str, tuple[str, str]] = {
    "evaluator": ("evaluator", "the text-motion evaluator behind every metric"),
    "mdm": ("mdm", "the MDM diffusion baseline (a diffusers pipeline folder)"),
    "t2m-gpt": ("t2m_gpt", "the T2M-GPT baseline: VQ-VAE tokenizer, then the text-conditioned GPT"),
    "vqvae": ("t2m_gpt", "only the VQ-VAE motion tokenizer of T2M-GPT"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the evaluator or a baseline with accelerate",
        description="Train one model of the benchmark on the Express4D data (default: the embedded procedural "
        "corpus): the text-motion evaluator every metric is measured with, or a baseline (MDM, T2M-GPT, or only "
        "T2M-GPT's VQ-VAE tokenizer). Each run writes a folder that from_pretrained loads, resumes from the "
        "checkpoints it finds there, and runs on one process or N (accelerate launch -m express4d_hf.cli train ...). "
        "`express4d train MODEL --help` lists a model's options.",
        epilog="example: express4d train mdm --preset tiny --out runs/mdm",
    )
    parser.set_defaults(_parser=parser)
    verbs = parser.add_subparsers(dest="model", metavar="MODEL")
    for verb, (_, summary) in TRAIN_VERBS.items():
        stub = verbs.add_parser(verb, help=summary, add_help=False, prefix_chars="\0")
        stub.add_argument("arguments", nargs=argparse.REMAINDER)
        stub.set_defaults(func=_dispatch, _verb=verb)


def trainer_parser(verb: str) -> argparse.ArgumentParser:
    """The full parser of one ``express4d train <verb>``, built by its trainer module."""
    module, _ = TRAIN_VERBS[verb]
    root = OneLineErrorParser(prog="express4d train")
    verbs = root.add_subparsers(dest="model")
    importlib.import_module(f"express4d_hf.training.{module}").add_train_command(verbs)
    return verbs.choices[verb]


def _dispatch(args: argparse.Namespace) -> int:
    parser = trainer_parser(args._verb)
    parser.prog = f"express4d train {args._verb}"
    real = parser.parse_args(args.arguments)
    real.command, real.verbose = args.command, args.verbose
    return real.func(real)


def add_pipeline_train_arguments(parser) -> None:
    """Arguments of the verbs that end in a text-to-motion pipeline (mdm, t2m-gpt)."""
    parser.add_argument("--text-encoder", default=None, metavar="NAME_OR_PATH",
                        help="transformers text encoder (default: the offline all-MiniLM-L6-v2)")  # fmt: skip
    parser.add_argument("--evaluator", default=None, metavar="DIR",
                        help="after training, score the model with this evaluator folder (test split, a few "
                        "replications, next to a text-blind control) and put the numbers in the model card")  # fmt: skip
    parser.add_argument("--replications", type=positive_int, default=3, help="replications of the --evaluator check (default 3)")


def add_common_train_arguments(parser, default_out: str) -> None:
    """Arguments every `express4d train ...` verb shares."""
    parser.add_argument("--data", default=None, help="release folder, built dataset folder or hub id (default: embedded procedural corpus)")
    parser.add_argument("--out", default=default_out, help=f"output folder, loadable with from_pretrained (default: {default_out})")
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="model/training size (tiny: CPU minutes; paper: one GPU)")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="override the preset's number of steps")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="override the preset's batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist in --out")
