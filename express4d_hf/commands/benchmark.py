"""``express4d benchmark``: data -> evaluator -> MDM -> T2M-GPT -> every row -> results table and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.constants import DIFFUSION_SAMPLERS
from .arguments import finite_float, non_negative_int, positive_int, unit_float


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
    parser.add_argument("--replications", type=positive_int, default=None, help="protocol replications (tiny: 5, paper: 20)")
    parser.add_argument("--models", default="mdm,t2m-gpt", help="comma-separated baselines: mdm, t2m-gpt")
    parser.add_argument("--max-test-clips", type=non_negative_int, default=None, help="test subset in whole groups of 32 (tiny: 128; 0 = whole split)")
    parser.add_argument("--full-ddpm", action=argparse.BooleanOptionalAction, default=None,
                        help="also score MDM with the 1000-step DDPM sampler (default: on in paper, off in tiny)")  # fmt: skip
    parser.add_argument("--multimodality", action=argparse.BooleanOptionalAction, default=None,
                        help="also compute Multimodality (default: on in paper, off in tiny)")  # fmt: skip
    parser.add_argument("--sampler", choices=DIFFUSION_SAMPLERS[1:], default=None, help="fast MDM sampler (default ddim)")
    parser.add_argument("--steps", type=positive_int, default=None, help="denoising steps of the fast MDM row (default 50)")
    parser.add_argument("--guidance-scale", type=finite_float, default=None, help="classifier-free guidance of the MDM rows (default 2.5)")
    parser.add_argument("--guidance-rescale", type=unit_float, default=None,
                        help="guidance rescale of the fast MDM row, 0..1 (default: tiny 0, paper 0.7; see rescale_guidance)")  # fmt: skip
    parser.add_argument("--eta", type=unit_float, default=None, help="DDIM's per-step noise share in the fast MDM row (default 0)")
    parser.add_argument("--fast-sampling", action=argparse.BooleanOptionalAction, default=None,
                        help="on a GPU, sample MDM in bf16 with replayed CUDA graphs (default: on)")  # fmt: skip
    parser.add_argument("--max-steps", action="append", default=[], metavar="STAGE=N",
                        help="override training steps of a stage (evaluator, mdm, vqvae, gpt); repeatable")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage")
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
        full_ddpm=args.full_ddpm, multimodality=args.multimodality, fast_sampling=args.fast_sampling, fast_eta=args.eta, fast_guidance_rescale=args.guidance_rescale,
        guidance_scale=args.guidance_scale,
    )  # fmt: skip
    config = BenchmarkConfig.preset_config(args.preset, **overrides)
    if max_clips is not None:
        config.max_test_clips = None if max_clips == 0 else max_clips
    report = run_benchmark(args.data, args.out, config, resume=args.resume)
    print(Path(args.out, "results.md").read_text())
    print(f"results: {args.out}/results.json, results.md, metrics.png, samples/ ({report['meta']['timings']['total_s']:.0f} s)")
    return 0
