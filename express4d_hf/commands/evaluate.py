"""``express4d evaluate``: one model (a pipeline folder, or a folder of Live Link CSVs with a manifest) scored
with the protocol next to the Real row and the text-blind control."""

from __future__ import annotations

import argparse
from pathlib import Path

from .sampling import add_protocol_arguments, add_sampling_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model folder or a folder of generated CSVs with the protocol",
        description="Score one model with the Express4D protocol (mean ± 95% interval over replications) next to "
        "the Real row and the text-blind control, and write results.json, results.md and metrics.png. With the "
        "benchmark's folders and sampling flags it reproduces the benchmark's row exactly. --motions scores "
        "motions made anywhere: a folder of Live Link CSVs with manifest.json, a JSON list of "
        '{"file": "take.csv", "caption": "A person ..."}.',
        epilog="example: express4d evaluate --model runs/benchmark/mdm --evaluator runs/benchmark/evaluator "
        "--replications 5 --max-test-clips 128 --out runs/eval-mdm",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="a pipeline folder (MDM or T2M-GPT)")
    source.add_argument("--motions", metavar="DIR", help="a folder of Live Link CSVs with manifest.json")
    parser.add_argument("--evaluator", required=True, metavar="DIR",
                        help="the evaluator folder that scores (e.g. runs/benchmark/evaluator)")  # fmt: skip
    parser.add_argument("--data", default=None, help="release folder, built dataset folder or hub id (default: embedded procedural corpus)")
    parser.add_argument("--out", default="runs/evaluate", help="output folder (default: runs/evaluate)")
    add_protocol_arguments(parser, "protocol replications (default 20)",
                           "test subset in whole groups of 32 (default and 0: the whole split)")  # fmt: skip
    add_sampling_arguments(parser, ddpm=True)
    parser.add_argument("--no-control", action="store_true", help="score the model alone (no Real and text-blind rows)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..apps.evaluate import EvaluateConfig, run_evaluation
    from ..evaluation.scoring import Sampling

    # Unset flags sample as the benchmark's fast row does: DDIM, 50 steps, guidance 2.5.
    sampling = Sampling(sampler=args.sampler or "ddim", steps=args.steps,
                        guidance_scale=2.5 if args.guidance_scale is None else args.guidance_scale,
                        guidance_rescale=args.guidance_rescale or 0.0, eta=args.eta or 0.0,
                        fast_sampling=args.fast_sampling is not False)  # fmt: skip
    config = EvaluateConfig(replications=args.replications or 20, max_test_clips=args.max_test_clips or None, seed=args.seed,
                            multimodality=bool(args.multimodality), sampling=sampling, control=not args.no_control)  # fmt: skip
    run_evaluation(args.out, args.evaluator, model=args.model, motions=args.motions, data=args.data, config=config)
    print(Path(args.out, "results.md").read_text())
    print(f"results: {args.out}/results.json, results.md, metrics.png")
    return 0
