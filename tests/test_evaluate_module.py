"""`evaluate.load("metrics/express4d", ...)` from the local folder, offline, in a fresh interpreter.

A subprocess keeps the offline flags and the evaluate cache folders (set before `import evaluate`)
out of the rest of the suite; importing evaluate (which imports transformers) dominates its time,
so one script runs every check and the tests assert on its JSON report.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO / "metrics" / "express4d"

SCRIPT = textwrap.dedent(
    r"""
    import json, sys, warnings
    import numpy as np
    import evaluate
    from express4d_hf import FaceMotion

    metric_dir, want_real_evaluator, evaluator_dir = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    report = {}
    rng = np.random.default_rng(0)

    # --- embeddings config
    emb = evaluate.load(metric_dir, "embeddings")
    text = rng.normal(size=(64, 16))
    report["emb_perfect"] = emb.compute(predictions=text, references=text, real_embeddings=text)
    noisy = text + rng.normal(size=text.shape)
    report["emb_lists"] = emb.compute(predictions=noisy.tolist(), references=list(text), real_embeddings=text,
                                      mm_embeddings=rng.normal(size=(3, 4, 16)), group_size=32, diversity_pairs=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report["emb_no_real"] = emb.compute(predictions=text, references=text)
    report["emb_no_real_warned"] = any("no FID" in str(w.message) for w in caught)
    for batch in (text[:40], text[40:]):
        emb.add_batch(predictions=batch, references=batch)
    report["emb_batched"] = emb.compute(real_embeddings=text)
    try:
        emb.compute(predictions=text[:20], references=text[:20])
    except ValueError as err:
        report["emb_too_few"] = str(err)
    try:
        evaluate.load(metric_dir, "no-such-config")
    except Exception as err:
        report["bad_config"] = f"{type(err).__name__}: {err}"

    # --- default config with a duck-typed evaluator object (channel means of the first 8 channels)
    class ChannelMean:
        def __init__(self, clips):
            self.table = {c.caption: c.resample(20).values[:, :8].mean(0) for c in clips}
            self.real_stats = None
        def embed_texts(self, captions):
            return np.stack([self.table[c] for c in captions])
        def embed_motions(self, motions):
            return np.stack([m.resample(20).values[:, :8].mean(0) for m in motions])

    clips = [FaceMotion(rng.uniform(0, 1, 61) + 0.02 * rng.standard_normal((30 + i, 61)), fps=20, caption=f"clip {i}")
             for i in range(40)]
    fake = ChannelMean(clips)
    default = evaluate.load(metric_dir)
    at_60 = [c.resample(60) for c in clips]
    report["default_motions"] = default.compute(predictions=at_60, references=[c.caption for c in clips],
                                                evaluator=fake, real_motions=clips)
    report["default_arrays"] = default.compute(predictions=[c.values for c in clips],
                                               references=[c.caption for c in clips], evaluator=fake,
                                               real_motions=[c.values for c in clips])
    for start in (0, 25):  # incremental: FaceMotion batches through add_batch
        default.add_batch(predictions=at_60[start : start + 25], references=[c.caption for c in clips[start : start + 25]])
    report["default_add_batch"] = default.compute(evaluator=fake, real_motions=clips)
    # Repeated captions: 3 generations of 5 prompts appended -> multimodality; FID from evaluator.real_stats.
    mu = np.mean(fake.embed_motions(clips), 0); sigma = np.cov(fake.embed_motions(clips), rowvar=False)
    fake.real_stats = (mu, sigma)
    repeats = [FaceMotion(c.values + 0.1 * k, fps=20) for k in (1, 2) for c in clips[:5]]
    report["default_repeats"] = default.compute(predictions=clips + repeats,
                                                references=[c.caption for c in clips] + [c.caption for c in clips[:5]] * 2,
                                                evaluator=fake)
    try:
        default.compute(predictions=[np.zeros((10, 60))] * 32, references=["x"] * 32, evaluator=fake)
    except ValueError as err:
        report["default_bad_shape"] = str(err)
    try:
        default.compute(predictions=[c.values for c in clips], references=[c.caption for c in clips])
    except ValueError as err:
        report["default_no_evaluator"] = str(err)

    # --- default config with a saved TextMotionEvaluator (only once that class exists)
    if want_real_evaluator:
        from express4d_hf.core.stats import NormStats
        from express4d_hf.models.evaluator import TextMotionEvaluator
        model = TextMotionEvaluator.from_text_encoder("tiny", stats=NormStats.compute([c.values for c in clips]))
        model.set_reference(model.embed_motions(clips))  # saved as the FID reference (real_stats)
        model.save_pretrained(evaluator_dir)
        report["default_saved_evaluator"] = default.compute(
            predictions=at_60, references=[c.caption for c in clips], evaluator=evaluator_dir)
    # --- the Space page (app.py): builds, scores its example, explains bad input
    import importlib.util
    import gradio as gr
    spec = importlib.util.spec_from_file_location("express4d_metric_app", f"{metric_dir}/app.py")
    app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app)
    report["app_is_blocks"] = isinstance(app.build_demo(emb), gr.Blocks)
    report["app_example"] = app.score(app.example_payload(), emb)
    report["app_errors"] = []
    for bad in ("{not json", '{"predictions": [[1.0]]}', json.dumps({"predictions": [[0.0]] * 40, "references": [[0.0]] * 40, "extra": 1}),
                json.dumps({"predictions": [[0.0]] * 5, "references": [[0.0]] * 5})):
        try:
            app.score(bad, emb)
        except gr.Error as err:
            report["app_errors"].append(err.message)
    print("REPORT" + json.dumps(report))
    """
)


def _run(tmp_path: Path, with_real_evaluator: bool) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HOME=str(tmp_path / "hf"), HF_EVALUATE_CACHE=str(tmp_path / "evaluate"),
        HF_MODULES_CACHE=str(tmp_path / "modules"), HF_METRICS_CACHE=str(tmp_path / "metrics"),
        GRADIO_ANALYTICS_ENABLED="False", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore::FutureWarning",
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(METRIC_DIR), "1" if with_real_evaluator else "0", str(tmp_path / "evaluator")],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    assert proc.returncode == 0 and lines, f"metric script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("REPORT") :])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from importlib.util import find_spec

    has_evaluator = find_spec("express4d_hf.models.evaluator") is not None
    return _run(tmp_path_factory.mktemp("evaluate_module"), has_evaluator)


def test_module_files_follow_the_evaluate_conventions():
    source = (METRIC_DIR / "express4d.py").read_text()
    for line in source.splitlines():
        if line.startswith("import "):
            assert "," not in line, f"one import per line, or evaluate.load breaks: {line!r}"
    for name in ("README.md", "requirements.txt", "app.py"):
        assert (METRIC_DIR / name).is_file(), name
    card = (METRIC_DIR / "README.md").read_text()
    assert card.startswith("---\n") and "app_file: app.py" in card and 'evaluate.load("' in card


def test_space_page_scores_and_explains_bad_input(report):
    assert report["app_is_blocks"]
    example = report["app_example"]
    assert {"r_precision_top3", "fid", "mm_dist", "diversity"} <= set(example)
    assert 0.5 < example["r_precision_top3"] <= 1.0 and example["fid"] > 0  # motions sit near their texts
    not_json, missing, unknown, too_few = report["app_errors"]
    assert "not valid JSON (line 1" in not_json
    assert '"references"' in missing
    assert "unknown field" in unknown and "extra" in unknown
    assert "32" in too_few


def test_embeddings_config(report):
    perfect = report["emb_perfect"]
    assert list(perfect) == ["r_precision_top1", "r_precision_top2", "r_precision_top3", "fid", "mm_dist", "diversity"]
    assert perfect["r_precision_top1"] == 1.0 and abs(perfect["fid"]) < 1e-6 and perfect["mm_dist"] == 0.0
    noisy = report["emb_lists"]
    assert noisy["r_precision_top1"] < 1.0 and noisy["fid"] > 0.5 and noisy["multimodality"] > 0
    assert "fid" not in report["emb_no_real"] and report["emb_no_real_warned"]
    assert report["emb_batched"] == {**perfect, "fid": report["emb_batched"]["fid"]}
    assert "at least one full group of 32" in report["emb_too_few"]
    assert "no-such-config" in report["bad_config"]


def test_default_config_with_an_evaluator_object(report):
    motions, arrays = report["default_motions"], report["default_arrays"]
    assert motions["r_precision_top1"] == 1.0 and motions["fid"] < 1e-3  # 60 fps FaceMotions resampled to 20
    assert arrays == pytest.approx(motions, abs=1e-3)
    assert report["default_add_batch"] == motions
    repeats = report["default_repeats"]
    assert repeats["r_precision_top1"] == 1.0 and "fid" in repeats  # FID from evaluator.real_stats
    assert repeats["multimodality"] > 0
    assert "prediction 0" in report["default_bad_shape"]
    assert "needs evaluator=" in report["default_no_evaluator"]


def test_default_config_with_a_saved_text_motion_evaluator(report):
    pytest.importorskip("express4d_hf.models.evaluator", reason="TextMotionEvaluator is built by another task")
    out = report["default_saved_evaluator"]  # an untrained evaluator: only the plumbing is checked
    assert {"r_precision_top1", "fid", "mm_dist", "diversity"} <= set(out)
    assert out.pop("evaluator").startswith("sha256:")  # scores name the evaluator that made them
    assert all(math.isfinite(value) for value in out.values())
    assert out["fid"] < 1e-2  # the saved reference is these very clips (given here at 60 fps)
