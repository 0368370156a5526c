"""``express4d benchmark``: data -> evaluator -> MDM -> T2M-GPT -> every row -> results table and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from .sampling import add_protocol_arguments, add_sampling_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="reproduce the whole Express4D results table in one command",
        description="Build the data, train the evaluator and both baselines, score every row with the protocol "
        "(mean ± 95% interval over replications) and write results.json, results.md, metrics.png and samples/. "
        "Re-running the same command resumes: finished stages whose config and data match are skipped.",
    )
    parser.add_argument("--data", default=None, help="release folder, built dataset folder or hub id (default: embedded procedural corpus)")
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny", help="tiny: 2-core CPU in <= 15 min; paper: official protocol on one GPU")
    parser.add_argument("--out", default="runs/benchmark", help="output folder (default: runs/benchmark)")
    add_protocol_arguments(parser, "protocol replications (tiny: 5, paper: 20)",
                           "test subset in whole groups of 32 (tiny: 128; 0 = whole split)")  # fmt: skip
    parser.add_argument("--models", default="mdm,t2m-gpt,mdm-order,t2m-gpt-order",
                        help="comma-separated baselines: mdm, t2m-gpt and their order-aware variants mdm-order, "
                        "t2m-gpt-order (default: all four)")  # fmt: skip
    parser.add_argument("--full-ddpm", action=argparse.BooleanOptionalAction, default=None,
                        help="also score MDM with the 1000-step DDPM sampler (default: on in paper, off in tiny)")  # fmt: skip
    parser.add_argument("--full-ddpm-order", action=argparse.BooleanOptionalAction, default=None,
                        help="with --full-ddpm, the order-aware MDM's DDPM row too (default: off; ~4.5 min more on an H200)")
    add_sampling_arguments(parser)  # the fast MDM row's sampling; Multimodality is on in paper, off in tiny
    parser.add_argument("--max-steps", action="append", default=[], metavar="STAGE=N",
                        help="override training steps of a stage (evaluator, mdm, vqvae, gpt); repeatable")  # fmt: skip
    parser.add_argument("--evaluator", default=None, metavar="DIR",
                        help="score the rows with this evaluator folder instead of the one trained here, e.g. the "
                        "official evaluator converted by `express4d convert official-evaluator` (the results say which)")  # fmt: skip
    parser.add_argument("--concurrent", action=argparse.BooleanOptionalAction, default=True,
                        help="on a GPU, run the trainings at once, one process each (default: on)")  # fmt: skip
    parser.add_argument("--mps", action=argparse.BooleanOptionalAction, default=True,
                        help="the concurrent trainings share each GPU through a private CUDA MPS daemon, so their kernels "
                        "overlap (an H200 ran MDM, VQ-VAE and GPT together 1.31x faster than one after the other, 1.06x "
                        "without); without the daemon's binary they run without it (default: on)")  # fmt: skip
    parser.add_argument("--gpus", type=int, default=1, metavar="N",
                        help="spread the trainings over N GPUs of this machine (evaluator, MDM, T2M-GPT on GPU 0, 1, 2 mod N)")  # fmt: skip
    parser.add_argument("--compare-samplers", default=None, metavar="SAMPLER:STEPS,...",
                        help="more MDM rows with the fast row's guidance and rescale (paper: dpmsolver++:12; '' for none)")  # fmt: skip
    parser.add_argument("--select-checkpoints", action=argparse.BooleanOptionalAction, default=None,
                        help="hold the evaluator's validation clips out of the generators' training too, keep "
                        "--selection-points weight files per generator, score them on those clips (3 replications, the "
                        "row's sampler) and score the test rows with the best (validation R@3, near-ties by FID); "
                        "results.json and validation.png show the curve (default: on in paper, off in tiny)")  # fmt: skip
    parser.add_argument("--selection-points", type=int, default=None, metavar="N",
                        help="checkpoints kept per generator for --select-checkpoints, evenly spaced (default: 10)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True, help="skip finished stages (default)")
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="redo every stage")
    parser.set_defaults(func=run)


def _parse_steps(items: list[str]) -> dict[str, int]:
    steps = {}
    for item in items:
        stage, sep, value = item.partition("=")
        if not sep or stage not in ("evaluator", "mdm", "vqvae", "gpt") or not value.isdigit():
            raise ValueError(f"--max-steps {item!r}: expected STAGE=N with STAGE one of evaluator, mdm, vqvae, gpt")
        steps[stage] = int(value)
    return steps


def run(args: argparse.Namespace) -> int:
    from ..apps.benchmark import BenchmarkConfig, run_benchmark

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    max_clips = args.max_test_clips
    overrides = dict(
        replications=args.replications, models=models, fast_sampler=args.sampler, fast_steps=args.steps,
        seed=args.seed, max_steps=_parse_steps(args.max_steps),
        full_ddpm=args.full_ddpm, full_ddpm_order=args.full_ddpm_order, multimodality=args.multimodality, fast_sampling=args.fast_sampling, fast_eta=args.eta, fast_guidance_rescale=args.guidance_rescale,
        guidance_scale=args.guidance_scale, evaluator=args.evaluator, concurrent=args.concurrent, mps=args.mps, gpus=args.gpus,
        select_checkpoints=args.select_checkpoints, selection_points=args.selection_points,
        compare_samplers=None if args.compare_samplers is None else tuple(x for x in args.compare_samplers.split(",") if x),
    )  # fmt: skip
    config = BenchmarkConfig.preset_config(args.preset, **overrides)
    if max_clips is not None:
        config.max_test_clips = None if max_clips == 0 else max_clips
    report = run_benchmark(args.data, args.out, config, resume=args.resume)
    print(Path(args.out, "results.md").read_text())
    print(f"results: {args.out}/results.json, results.md, metrics.png, samples/ ({report['meta']['timings']['total_s']:.0f} s)")
    return 0
