"""Score one MDM pipeline folder as in docs/BENCHMARKS.md (supplementary 3000-step run).

Usage: python score_3000_steps.py PIPELINE_DIR OUT.json EVALUATOR_DIR (the benchmark run's evaluator/ folder)
"""
import sys, json, time, torch
torch.set_num_threads(1)
from express4d_hf.data.hub import load_express4d
from express4d_hf.data.splits import clips_from_split
from express4d_hf.evaluation.order import order_probe
from express4d_hf.evaluation.scoring import Sampling, pipeline_generate_fn, score_pipeline, test_subset
from express4d_hf.models.evaluator import TextMotionEvaluator
from express4d_hf.pipelines.loading import load_pipeline
folder = sys.argv[1]
ev = TextMotionEvaluator.from_pretrained(sys.argv[3])
clips = test_subset(clips_from_split(load_express4d(None, progress=False)["test"]), 128)
pipe = load_pipeline(folder); pipe.set_progress_bar_config(disable=True)
s = Sampling(sampler="ddim", steps=50, guidance_scale=2.5)
r = score_pipeline(pipe, ev, clips, s, replications=5, seed=0, progress=False)
kw = s.prepare(pipe)
o = order_probe(pipeline_generate_fn(pipe, **kw))
out = {"folder": folder, "metrics": {k: [r.mean(k), r.ci95(k)] for k in r.values}, "order": o.to_dict()}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(folder, {k: f"{r.mean(k):.3f}±{r.ci95(k):.3f}" for k in ("r_precision_top3", "fid")}, o.cell())
