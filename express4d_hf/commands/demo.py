"""``express4d demo``: run the Express4D Gradio app (the same one the Hugging Face Space runs) locally."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .arguments import port, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the Gradio app (Generate, Browse, Contribute) locally",
        description="Start the Express4D web app: type a sentence and watch a 3D head perform it, browse the "
        "dataset, and contribute Live Link Face takes. It is the app of the Hugging Face Space "
        "(spaces/express4d), run from this installation. Without --model it looks for trained pipelines under "
        "./runs; with none, it trains the tiny baselines on the embedded procedural corpus in the background "
        "(progress and expected wait on the page; kept in the cache, so the next start loads them; "
        "EXPRESS4D_AUTO_TRAIN=0 turns it off) while the other tabs already work. "
        "Needs the demo extra: pip install 'express4d-hf[demo]'.",
        epilog="example: express4d demo --model runs/mdm --model runs/t2m_gpt --port 7860",
    )
    parser.add_argument("--model", action="append", default=None, metavar="DIR",
                        help="pipeline folder, folder of pipeline folders, or Hub repo id; repeat for MDM and "
                             "T2M-GPT (default: $EXPRESS4D_MODELS, else ./runs)")  # fmt: skip
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="dataset for Browse: release folder, built dataset or Hub id (default: $EXPRESS4D_DATA, "
                             "else the procedural corpus)")  # fmt: skip
    parser.add_argument("--contributions", default=None, metavar="DIR",
                        help="where accepted contributions are stored (default: $EXPRESS4D_CONTRIBUTIONS, else "
                             "./contributions)")  # fmt: skip
    parser.add_argument("--port", type=port, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 serves your network)")  # fmt: skip
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--concurrency", type=positive_int, default=2, help="requests handled at once (default 2)")
    parser.set_defaults(func=_run, _parser=parser)


def _run(args: argparse.Namespace) -> int:
    from ..cli import CommandError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise CommandError("the demo needs gradio: pip install 'express4d-hf[demo]'") from None
    for source in args.model or []:
        looks_like_repo = re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith(".")
        if not Path(source).expanduser().exists() and not looks_like_repo:
            raise CommandError(f"--model {source}: no such folder (and not a Hub repo id owner/name)")
    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be between 1 and 65535, got {args.port}")
    if args.concurrency < 1:
        raise CommandError(f"--concurrency must be at least 1, got {args.concurrency}")

    from ..apps.space import build_app

    overrides = {"concurrency": args.concurrency}
    if args.contributions:
        overrides["contributions_dir"] = Path(args.contributions)
    app = build_app(models=args.model, data=args.data, **overrides)
    if args.model and not app.models:
        raise CommandError("no MDM or T2M-GPT pipeline in " + ", ".join(args.model) + ": "
                           + "; ".join(app.model_problems))  # fmt: skip
    if app.trainer is not None and app.trainer.state == "training":
        print(f"models: none configured; training the tiny baselines in the background into {app.trainer.root} "
              "(progress on the page)")  # fmt: skip
    else:
        print("models: " + (", ".join(f"{k} ({v})" for k, v in app.models.items()) or "none (see the page)"))
    app.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0
