"""Order accuracy of every checkpoint a training kept: the benchmark's order probe (28 two-step instructions, 4
samples each) run on each ``weights/step_*.safetensors`` of a trained MDM or T2M-GPT pipeline folder, to see when
(and whether) a model learns to follow the order, independently of the checkpoint that validation R@3 selects.

    python bench/order_by_checkpoint.py runs/benchmark/t2m_gpt_order --json out/order_by_checkpoint.json
    python bench/order_by_checkpoint.py runs/benchmark/mdm_order --call num_inference_steps=50 --call guidance_scale=2.5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="trained pipeline folders (each with weights/step_*.safetensors)")
    parser.add_argument("--call", action="append", default=[], metavar="KEY=JSON", help="pipeline call argument, e.g. guidance_scale=2.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    import torch

    from express4d_hf.evaluation.order import order_probe
    from express4d_hf.evaluation.scoring import pipeline_generate_fn
    from express4d_hf.evaluation.selection import load_weights, saved_weights
    from express4d_hf.pipelines.loading import load_pipeline
    from express4d_hf.training.common import write_json

    call = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.call)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "call": call, "folders": {}}
    for folder in args.folders:
        pipe = load_pipeline(folder).to(device)
        pipe.set_progress_bar_config(disable=True)
        rows = []
        for step, path in saved_weights(folder):
            load_weights(pipe, path)
            result = order_probe(pipeline_generate_fn(pipe, **call), seed=args.seed)
            rows.append({"step": step, "order_accuracy": result.accuracy, "ci": [result.ci_low, result.ci_high]})
            print(f"{Path(folder).name} step {step}: order accuracy {result.cell()}", flush=True)
        results["folders"][str(folder)] = rows
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
