"""``express4d train <model>``: the command line owns its arguments.

Trainers expose a config dataclass and a ``train_*(data, out_dir, config, ...)`` function and nothing of
argparse; this module builds each verb's parser from the config dataclasses with the one generic mapping of
:mod:`.config_args` (every documented field is an option; the preset fills the defaults, explicit options
override them; ``t2m-gpt`` trains two configs and prefixes the fields of each: ``--vqvae-learning-rate``,
``--gpt-learning-rate``). Trainer modules import torch and diffusers, which takes seconds; so ``express4d
--help`` lists the verbs from the light table below and a trainer is imported only when its verb runs (or its
``--help`` is asked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .arguments import OneLineErrorParser, positive_int

# verb -> (module under express4d_hf.training, one-line help)
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


# verb -> (description, default --out)
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "evaluator": ("Train the HumanML3D-style text-motion evaluator (movement autoencoder, then margin-10 contrastive "
                  "matching), selected on a seeded validation split carved from train. The output folder loads with "
                  "TextMotionEvaluator.from_pretrained and carries its stats, tokenizer and FID reference.", "runs/evaluator"),
    "mdm": ("Train the Motion Diffusion Model baseline (x0-prediction transformer, 1000-step cosine schedule, "
            "classifier-free guidance, EMA) and save a diffusers pipeline folder that loads with "
            "Express4DMDMPipeline.from_pretrained or `express4d generate --model`. Runs on 1 or N processes "
            "(accelerate launch -m express4d_hf.cli train mdm ...).", "runs/mdm"),
    "t2m-gpt": ("Train T2M-GPT in two stages (a motion VQ-VAE with an EMA codebook and dead-code reset, then a causal "
                "transformer over [text; codes; end] with code corruption) and save a diffusers-format pipeline folder "
                "that loads with Express4DT2MGPTPipeline.from_pretrained or `express4d generate --model`. Stage 1's "
                "fields are --vqvae-*, stage 2's --gpt-*; --max-steps, --batch-size and --seed set both. Runs on 1 or "
                "N processes (accelerate launch -m express4d_hf.cli train t2m-gpt ...).", "runs/t2m_gpt"),
    "vqvae": ("Train stage 1 of T2M-GPT: a motion VQ-VAE over normalised 20 fps clips (x4 temporal downsampling, EMA "
              "codebook with dead-code reset). --out becomes a MotionVQVAE folder that `express4d train t2m-gpt "
              "--vqvae DIR` reuses.", "runs/vqvae"),
}  # fmt: skip
PRECISION_NOTE = ("Mixed precision: --mixed-precision, else accelerate's setting (accelerate launch --mixed_precision, "
                  "ACCELERATE_MIXED_PRECISION, `accelerate config`), else bf16 on a GPU and none on a CPU.")  # fmt: skip
SHARED = ("max_steps", "batch_size", "seed")  # t2m-gpt: one option sets both stages


def _config_classes(verb: str) -> dict[str, type]:
    """``{prefix: config class}`` of a verb ("" = unprefixed)."""
    if verb == "evaluator":
        from ..training.evaluator import EvaluatorTrainConfig

        return {"": EvaluatorTrainConfig}
    if verb == "mdm":
        from ..training.mdm import MDMTrainConfig

        return {"": MDMTrainConfig}
    from ..training.t2m_gpt import GPTTrainConfig, VQVAETrainConfig

    return {"": VQVAETrainConfig} if verb == "vqvae" else {"vqvae": VQVAETrainConfig, "gpt": GPTTrainConfig}


def trainer_parser(verb: str) -> argparse.ArgumentParser:
    """The full parser of one ``express4d train <verb>``, built from its config dataclasses."""
    from .config_args import add_config_arguments

    description, default_out = DESCRIPTIONS[verb]
    parser = OneLineErrorParser(prog=f"express4d train {verb}", description=f"{description} {PRECISION_NOTE}")
    parser.add_argument("--data", default=None, help="release folder, built dataset folder or hub id (default: embedded procedural corpus)")
    parser.add_argument("--out", default=default_out, help=f"output folder, loadable with from_pretrained (default: {default_out})")
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="model/training size (tiny: CPU minutes; paper: one GPU)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist in --out")
    classes = _config_classes(verb)
    if verb in ("mdm", "t2m-gpt"):
        parser.add_argument("--evaluator", default=None, metavar="DIR",
                            help="after training, score the model with this evaluator folder (test split, a few "
                            "replications, next to a text-blind control) and put the numbers in the model card")  # fmt: skip
        parser.add_argument("--replications", type=positive_int, default=3, help="replications of the --evaluator check (default 3)")
    if verb == "t2m-gpt":
        parser.add_argument("--vqvae", default=None, metavar="DIR",
                            help="reuse a trained tokenizer (the --out of `express4d train vqvae` or of a T2M-GPT run) instead of stage 1")  # fmt: skip
        shared = parser.add_argument_group("both stages")
        shared.add_argument("--max-steps", type=positive_int, default=None, help="steps of both stages (a --vqvae-max-steps or --gpt-max-steps wins)")
        shared.add_argument("--vqvae-steps", dest="vqvae__max_steps", type=positive_int, default=None, help=argparse.SUPPRESS)
        shared.add_argument("--batch-size", type=positive_int, default=None, help="batch size of both stages")
        shared.add_argument("--seed", type=int, default=None, help="seed of both stages")
        shared.add_argument("--text-encoder", dest="gpt__text_encoder", default=None, metavar="NAME_OR_PATH",
                            help="transformers text encoder (default: the offline all-MiniLM-L6-v2)")  # fmt: skip
        for prefix, cls in classes.items():
            add_config_arguments(parser, cls, prefix, skip=SHARED[:0], title=f"stage {1 if prefix == 'vqvae' else 2} ({cls.__name__}): --{prefix}-FIELD")
    else:
        add_config_arguments(parser, classes[""])
    parser.set_defaults(_verb=verb)
    return parser


def configs_from_args(args: argparse.Namespace, verb: str) -> dict[str, Any]:
    """``{prefix: config}`` of a verb: the preset, then the options given (prefixed ones over shared ones)."""
    from .config_args import build_config, explicit_values

    configs = {}
    for prefix, cls in _config_classes(verb).items():
        explicit = {name: getattr(args, name) for name in SHARED if prefix and getattr(args, name, None) is not None}
        explicit.update(explicit_values(args, cls, prefix))
        configs[prefix] = build_config(cls, args.preset, explicit)
    return configs


def _dispatch(args: argparse.Namespace) -> int:
    parser = trainer_parser(args._verb)
    real = parser.parse_args(args.arguments)
    real.command, real.verbose = args.command, args.verbose
    try:
        configs = configs_from_args(real, args._verb)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    return {"evaluator": _run_evaluator, "mdm": _run_mdm, "vqvae": _run_vqvae, "t2m-gpt": _run_t2m_gpt}[args._verb](real, configs)


def _is_main() -> bool:
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process


def _run_evaluator(args: argparse.Namespace, configs: dict[str, Any]) -> int:
    from ..training.evaluator import METRICS_NAME, train_evaluator

    train_evaluator(args.data, args.out, configs[""], progress=True, resume=not args.no_resume)
    if not _is_main():
        return 0
    metrics = json.loads((Path(args.out) / METRICS_NAME).read_text())
    for split in ("validation", "test", "text_blind_control"):
        values = metrics[split]
        print(f"{split:>18}: R-precision top-1 {values['r_precision_top1']:.3f}  top-2 {values['r_precision_top2']:.3f}"
              f"  top-3 {values['r_precision_top3']:.3f}")  # fmt: skip
    print(f"evaluator saved to {args.out} ({metrics['train_seconds']:.0f} s)")
    return 0


def _run_mdm(args: argparse.Namespace, configs: dict[str, Any]) -> int:
    from ..training.mdm import METADATA_NAME, METRICS_NAME, save_pipeline_folder, train_mdm
    from ..training.common import write_json

    config = configs[""]
    pipe = train_mdm(args.data, args.out, config, progress=True, resume=not args.no_resume)
    if not _is_main():  # the other processes of `accelerate launch` are done
        return 0
    metadata = json.loads((Path(args.out) / METADATA_NAME).read_text())
    print(f"MDM pipeline saved to {args.out}: {metadata['steps']} steps in {metadata['train_seconds']:.0f} s "
          f"({metadata['samples_per_s']:.0f} samples/s, {metadata['hardware']})")  # fmt: skip
    if args.evaluator:
        from ..evaluation.scoring import Sampling, card_evaluation_markdown, score_for_card

        sampling = Sampling(sampler="ddim", steps=50, guidance_scale=config.guidance_scale)
        scores = score_for_card(pipe, args.evaluator, args.data, sampling, replications=args.replications, seed=config.seed)
        write_json(Path(args.out) / METRICS_NAME, scores)
        pipe.card_data["metrics"] = card_evaluation_markdown(scores, "MDM")
        pipe.card_data["scores"] = scores  # the card's model-index
        save_pipeline_folder(pipe, Path(args.out))
        print(pipe.card_data["metrics"])
    return 0


def _run_vqvae(args: argparse.Namespace, configs: dict[str, Any]) -> int:
    from ..training.t2m_gpt import METADATA_NAME, train_vqvae

    config = configs[""]
    vqvae = train_vqvae(args.data, args.out, config, progress=True, resume=not args.no_resume)
    if not _is_main():
        return 0
    meta = json.loads((Path(args.out) / METADATA_NAME).read_text())
    print(f"VQ-VAE saved to {args.out} ({meta['steps']} steps); codebook {vqvae.codebook_usage()}; "
          f"test reconstruction {meta.get('reconstruction_test')}")  # fmt: skip
    return 0


def _run_t2m_gpt(args: argparse.Namespace, configs: dict[str, Any]) -> int:
    from ..training.common import write_json
    from ..training.t2m_gpt import METADATA_NAME, METRICS_NAME, save_pipeline_folder, train_t2m_gpt

    vq_config, gpt_config = configs["vqvae"], configs["gpt"]
    pipe = train_t2m_gpt(args.data, args.out, vq_config, gpt_config, vqvae_dir=args.vqvae, progress=True,
                         resume=not args.no_resume)  # fmt: skip
    if not _is_main():
        return 0
    print(f"T2M-GPT pipeline saved to {args.out} (GPT {gpt_config.max_steps} steps)")
    if args.evaluator:
        from ..evaluation.scoring import card_evaluation_markdown, score_for_card

        scores = score_for_card(pipe, args.evaluator, args.data, replications=args.replications, seed=gpt_config.seed)
        write_json(Path(args.out) / METRICS_NAME, scores)
        pipe.card_data["metrics"] = card_evaluation_markdown(scores, "T2M-GPT")
        pipe.card_data["scores"] = scores  # the card's model-index
        save_pipeline_folder(pipe, Path(args.out))
        print(pipe.card_data["metrics"])
    print(f"training metadata: {Path(args.out) / METADATA_NAME}")
    return 0
