"""What 0.1 users have keeps working in 0.2: saved pipeline folders load and sample as before, and the moved
modules answer at their old paths (with a deprecation warning) for one release."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "mdm_pipeline_v0_1"
MOVED = {
    "express4d_hf.arkit": "express4d_hf.core.arkit",
    "express4d_hf.constants": "express4d_hf.core.constants",
    "express4d_hf.data.stats": "express4d_hf.core.stats",
    "express4d_hf.text": "express4d_hf.models.text",
    "express4d_hf.plotting": "express4d_hf.export.plotting",
    "express4d_hf.benchmark": "express4d_hf.apps.benchmark",
    "express4d_hf.space": "express4d_hf.apps.space",
    "express4d_hf.contribute": "express4d_hf.apps.contribute",
}


def test_pipeline_folder_saved_by_0_1_loads_and_samples_the_same(monkeypatch):
    """The folder was written by express4d-hf 0.1 (tiny random components); its model_index.json records the
    module paths of that version, and the sample it made then is stored beside it (``values``).

    It samples with DDPM. Since 0.2 the pipeline draws DDPM's per-step noise itself, on its device
    (``AncestralNoise``), so the default call gives ``values_device_noise``; with the step noise drawn as 0.1 drew
    it (by ``DDPMScheduler.step`` from the call's generator) the loaded components give 0.1's sample exactly."""
    from express4d_hf.pipelines import mdm
    from express4d_hf.pipelines.loading import load_pipeline
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline

    index = json.loads((FIXTURE / "model_index.json").read_text())
    assert index["denoiser"] == ["express4d_hf.models.mdm", "MDMDenoiser"]
    expected = json.loads((FIXTURE / "expected_sample.json").read_text())

    def sample(pipe):
        out = pipe([expected["prompt"]], num_frames=expected["num_frames"],
                   num_inference_steps=expected["num_inference_steps"],
                   generator=torch.Generator().manual_seed(expected["seed"]))  # fmt: skip
        return out.motions[0].values

    for pipe in (Express4DMDMPipeline.from_pretrained(FIXTURE), load_pipeline(FIXTURE)):
        pipe.set_progress_bar_config(disable=True)
        np.testing.assert_allclose(sample(pipe), np.asarray(expected["values_device_noise"], np.float32), atol=1e-5)
        with monkeypatch.context() as patch:  # the 0.1 draw: diffusers' step draws from the call's generator
            patch.setattr(mdm, "draws_ancestral_noise", lambda scheduler: False)
            np.testing.assert_allclose(sample(pipe), np.asarray(expected["values"], np.float32), atol=1e-5)


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_module_paths_warn_and_alias_the_new_module(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_readme_imports_still_work():
    from express4d_hf import FaceMotion, LiveLinkFormatError, read_livelink_csv, write_livelink_csv  # noqa: F401
    from express4d_hf.data.hub import load_express4d, resolve_dataset_dir  # noqa: F401
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline, make_scheduler  # noqa: F401
