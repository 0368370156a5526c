"""``express4d model push``: upload a trained pipeline folder to the Hub with the project's model card."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

#: training artefacts that travel with the pipeline when present (small, and what the card's numbers came from)
EXTRA_FILES = ("metrics.json", "training_metadata.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model",
        help="publish a trained pipeline on the Hub",
        description="Publish a pipeline folder (MDM or T2M-GPT, as written by `express4d train`).",
    )
    parser.set_defaults(_parser=parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    push = verbs.add_parser(
        "push",
        help="upload a pipeline folder to a Hub model repo",
        description="Load DIR, re-save it with the project's model card (licence from its training data: the "
        "Express4D data terms for the real captures, Apache-2.0 for the procedural corpus; datasets:; model-index "
        "with the scored metrics and the evaluator's fingerprint) plus metrics.json and training_metadata.json, and "
        "upload it to REPO_ID in one commit (checkpoints and samples stay local). --dry-run saves and lists the "
        "files and the card's licence and metrics without any network access.",
    )
    push.add_argument("model_dir", metavar="DIR", help="pipeline folder (model_index.json)")
    push.add_argument("repo_id", metavar="REPO_ID", help="model repo id, owner/name")
    push.add_argument("--dataset", default=None, metavar="REPO_ID",
                      help="the Hub dataset it was trained on, when training read a local folder (fills datasets: "
                      "and links the licence to it)")  # fmt: skip
    push.add_argument("--scores", default=None, metavar="RESULTS_JSON",
                      help="the results.json of `express4d evaluate --model DIR`: the card's Evaluation section and "
                      "model-index then carry these (published-protocol) numbers and their evaluator fingerprint")  # fmt: skip
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    push.set_defaults(func=_push)


def _push(args: argparse.Namespace) -> int:
    import yaml

    from ..cli import CommandError
    from ..pipelines.loading import load_pipeline

    if args.repo_id.count("/") != 1 or args.repo_id.startswith((".", "/")):
        raise CommandError(f"{args.repo_id!r} is not a Hub repo id; use 'owner/name'")
    folder = Path(args.model_dir)
    pipe = load_pipeline(folder)
    if args.scores:
        import json

        from ..pipelines.cards import scores_from_results

        results_path = Path(args.scores)
        try:
            scores = scores_from_results(json.loads(results_path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise CommandError(f"--scores {results_path}: {err}") from None
        pipe.card_data["scores"] = scores
        table = results_path.with_name("results.md")
        if table.is_file():
            pipe.card_data["metrics"] = table.read_text(encoding="utf-8").strip()
    if args.dataset:
        pipe.card_data["dataset"] = {**(pipe.card_data.get("dataset") or {"procedural": False}), "repo_id": args.dataset}
    with tempfile.TemporaryDirectory(prefix="express4d-model-push-") as tmp:
        pipe.save_pretrained(tmp)
        for name in EXTRA_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, Path(tmp) / name)
        files = sorted((p.relative_to(tmp).as_posix(), p.stat().st_size) for p in Path(tmp).rglob("*") if p.is_file())
        front = yaml.safe_load((Path(tmp) / "README.md").read_text(encoding="utf-8").split("---\n")[1])
        metrics = [m for entry in front.get("model-index") or [] for r in entry["results"] for m in r["metrics"]]
        licence = front.get("license") + (f" ({front['license_name']}, {front['license_link']})" if front.get("license_name") else "")
        fingerprint = metrics[0].get("args", {}).get("evaluator_fingerprint") if metrics else None
        summary = (f"licence {licence}; datasets: {front.get('datasets') or 'none on the Hub'}; model-index: "
                   + (f"{len(metrics)} metrics (evaluator {fingerprint})" if metrics else "none (not scored)"))  # fmt: skip
        url = f"https://huggingface.co/{args.repo_id}"
        if args.dry_run:
            from ..data.hub import _human_bytes

            groups: dict[str, list[int]] = {}
            for name, size in files:
                groups.setdefault(name.split("/")[0] + ("/" if "/" in name else ""), []).append(size)
            for name, sizes in groups.items():
                count = f" ({len(sizes)} files)" if name.endswith("/") else ""
                print(f"{_human_bytes(sum(sizes)):>10}  {name}{count}")
            total = sum(size for _, size in files)
            print(f"{_human_bytes(total):>10}  total, {len(files)} files -> {url} ({'private' if args.private else 'public'}); "
                  f"{summary}. Dry run: nothing uploaded.")  # fmt: skip
            return 0
        pipe._upload_pipeline_folder(tmp, args.repo_id, private=args.private,
                                     commit_message=f"Upload {type(pipe).__name__} (express4d model push)")  # fmt: skip
    print(f"uploaded {len(files)} files to {url}; {summary}")
    return 0
