"""``express4d convert``: the official Express4D checkpoints -> this package's folders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert the official Express4D checkpoints (MDM, evaluator) into loadable folders",
        description="Convert the authors' released checkpoints: the MDM model*.pt into a pipeline folder "
        "(`express4d generate --model DIR`, Express4DMDMPipeline.from_pretrained) and the evaluator's finest.tar into "
        "an evaluator folder (`express4d benchmark --evaluator DIR`). Files are read with torch.load(weights_only=True); "
        "every missing, unexpected or mis-shaped tensor is reported and nothing is written on error.",
    )
    parser.set_defaults(_parser=parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    mdm = verbs.add_parser(
        "official-mdm",
        help="the released MDM checkpoint (model*.pt + args.json) -> an Express4DMDMPipeline folder",
        description="Convert the official MDM checkpoint (model<step>.pt with args.json beside it) into a pipeline "
        "folder. The text encoder is CLIP ViT-B/32 as CLIPTextModelWithProjection (CLIP's encode_text features); the "
        "normaliser holds the release's own statistics (train + test at 60 fps, no epsilon), as the official code used.",
        epilog="example: express4d convert official-mdm save/express4d/model000400000.pt --out models/mdm-official "
        "--stats path/to/Express4D",
    )
    mdm.add_argument("checkpoint", metavar="CKPT", help="the official model<step>.pt")
    mdm.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    mdm.add_argument("--weights", choices=["model_avg", "model"], default=None,
                     help="EMA weights (model_avg, what official sampling uses; the default when present) or the raw ones")  # fmt: skip
    mdm.add_argument("--text-encoder", default=None, metavar="NAME_OR_PATH",
                     help="CLIP checkpoint (hub id or folder; default openai/clip-vit-base-patch32 = the official ViT-B/32)")  # fmt: skip
    mdm.add_argument("--stats", default=None, metavar="RELEASE_OR_FILES",
                     help="the release folder (or built dataset / hub id) to compute the official statistics from, or "
                     "MEAN.npy,STD.npy, or a stats.json; without it the outputs stay in the normalised space")  # fmt: skip
    mdm.add_argument("--args", dest="args_json", default=None, metavar="ARGS_JSON",
                     help="the training args.json when it is not beside CKPT")  # fmt: skip
    mdm.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    mdm.set_defaults(func=_mdm)

    ev = verbs.add_parser(
        "official-evaluator",
        help="the evaluator's finest.tar -> an evaluator folder the metrics load",
        description="Convert the official text-motion evaluator (finest.tar) into an evaluator folder with the "
        "normalisation statistics and FID reference computed from --data. The motion branch is exact; the text "
        "branch (BiGRU over GloVe vectors and POS one-hots) needs --glove-dir (our_vab_data.npy, our_vab_words.pkl, "
        "our_vab_idx.pkl; the pickles are read by a loader that accepts only lists, dicts, strings and numbers).",
        epilog="example: express4d convert official-evaluator checkpoints/express4d/eval/model/finest.tar "
        "--out evaluators/official --data path/to/Express4D --glove-dir glove/",
    )
    ev.add_argument("checkpoint", metavar="FINEST_TAR", help="the official finest.tar")
    ev.add_argument("--out", required=True, metavar="DIR", help="evaluator folder to write")
    ev.add_argument("--data", required=True, metavar="RELEASE_OR_DATASET",
                    help="release folder, built dataset folder or hub id: statistics, test clips (FID reference), POS tags")  # fmt: skip
    ev.add_argument("--glove-dir", default=None, metavar="DIR",
                    help="folder with the GloVe vocabulary files (our_vab_*); without it only the motion branch is converted")  # fmt: skip
    ev.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    ev.set_defaults(func=_evaluator)


def _check_out(out: str, overwrite: bool) -> None:
    if Path(out).exists() and not overwrite:
        raise ValueError(f"{out}: already exists (pass --overwrite to replace it)")


def _mdm(args: argparse.Namespace) -> int:
    from ..convert.mdm import convert_official_mdm
    from ..convert.stats import load_stats_argument

    _check_out(args.out, args.overwrite)
    stats = load_stats_argument(args.stats) if args.stats else None
    out = convert_official_mdm(args.checkpoint, args.out, weights=args.weights or "auto",
                               text_encoder=args.text_encoder, stats=stats, args_path=args.args_json,
                               overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {out} (load it with Express4DMDMPipeline.from_pretrained or `express4d generate --model {out}`)")
    return 0


def _evaluator(args: argparse.Namespace) -> int:
    from ..convert.evaluator import convert_official_evaluator

    _check_out(args.out, args.overwrite)
    out = convert_official_evaluator(args.checkpoint, args.out, data=args.data, glove_dir=args.glove_dir,
                                     overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {out} (score with it: `express4d benchmark --evaluator {out}`)")
    return 0
