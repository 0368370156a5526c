"""Order accuracy of the tiny order-aware MDM while it trains: the benchmark's MDM training (``MDMTrainConfig.preset
("tiny", model_preset="tiny_order")``, 1500 steps, one thread) with the order probe (DDIM 50, guidance 2.5, the
benchmark's probe) run on the EMA weights at every sample step (500, 1000, 1500) instead of writing samples.
The seed study of docs/BENCHMARKS.md ("Why the first order-aware MDM learned the order slowly") is this script.

    python bench/mdm_order_curve.py --out runs/order_curve/separate_s1 --seed 1
    python bench/mdm_order_curve.py --out runs/order_curve/joint_s1 --seed 1 --override text_attention=joint

Writes ``<out>/order_curve.jsonl`` (one line per probe step) beside the trained pipeline folder.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=JSON",
                        help="denoiser config field over the tiny_order preset, e.g. text_attention=joint")  # fmt: skip
    parser.add_argument("--max-steps", type=int, default=None, help="shorter run (smoke test)")
    args = parser.parse_args()

    from express4d_hf.evaluation.order import order_probe
    from express4d_hf.evaluation.scoring import Sampling, pipeline_generate_fn
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline, default_scheduler
    from express4d_hf.training import mdm as trainer

    overrides = {}
    for item in args.override:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "order_curve.jsonl"

    def probe(writer, step, model) -> None:
        started, was_training = time.perf_counter(), model.training
        model.eval()
        pipe = Express4DMDMPipeline(denoiser=model, scheduler=default_scheduler(), text_encoder=writer.text_encoder,
                                    tokenizer=writer.tokenizer, normalizer=writer.normalizer)  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        result = order_probe(pipeline_generate_fn(pipe, **Sampling(sampler="ddim", steps=50, guidance_scale=2.5).prepare(pipe)))
        model.train(was_training)
        record = {"step": step, "order_accuracy": result.accuracy, "interval": [result.ci_low, result.ci_high],
                  "passed": sum(p["passed"] for p in result.probes), "probe_s": round(time.perf_counter() - started, 1)}  # fmt: skip
        print(record, flush=True)
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")

    trainer.SampleWriter.__call__ = probe  # the sample callback of train_mdm becomes the probe
    config = trainer.MDMTrainConfig.preset("tiny", seed=args.seed, model_preset="tiny_order", model_overrides=overrides)
    if args.max_steps:
        config = config.with_max_steps(args.max_steps)
    trainer.train_mdm(None, out, config, progress=False, resume=True)


if __name__ == "__main__":
    main()
