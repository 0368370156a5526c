"""``express4d generate``: CSV (60 fps) + JSON + PNG from a saved pipeline folder, and its errors."""

from __future__ import annotations

import json


import numpy as np
import pytest
import torch

from express4d_hf import FaceMotion, read_livelink_csv
from express4d_hf.cli import main
from express4d_hf.models.mdm import MDMDenoiser
from express4d_hf.pipelines.mdm import Express4DMDMPipeline


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this file runs its tiny models on one thread."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    denoiser = MDMDenoiser.from_preset("tiny", num_layers=1, hidden_size=32, ff_size=64)
    folder = tmp_path_factory.mktemp("mdm_model")
    Express4DMDMPipeline.from_components(denoiser).save_pretrained(folder)
    return folder


def test_generate_writes_csv_json_png(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["generate", "A person is smiling softly", "--model", str(model_dir), "--duration", "2", "--steps", "3",
            "--guidance", "2.0", "--seed", "1", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    csvs = sorted(out.glob("*.csv"))
    assert [p.name for p in csvs] == ["00_a-person-is-smiling-softly.csv"]
    motion = read_livelink_csv(csvs[0])
    assert motion.fps == 60 and motion.num_frames == 120  # 2 s at 60 fps
    data = json.loads(csvs[0].with_suffix(".json").read_text())
    clip = FaceMotion.from_dict(data)
    assert clip.fps == 20 and clip.num_frames == 40 and clip.caption == "A person is smiling softly"
    assert clip.metadata["seed"] == 1 and clip.metadata["guidance_scale"] == 2.0
    raw = clip.resample(60).values
    np.testing.assert_allclose(motion.values[:, 52:], raw[:, 52:], atol=1e-5)  # rotations untouched
    assert motion.values[:, :52].min() >= 0 and motion.values[:, :52].max() <= 1  # blendshapes clamped on export
    assert clip.values[:, :52].min() >= 0 and clip.values[:, :52].max() <= 1 and clip.metadata["blendshapes_clamped"]
    png = csvs[0].with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "120" not in capsys.readouterr().err  # no error output

    # same seed -> same motion
    again = tmp_path / "again"
    assert main(args[:-1] + [str(again)]) == 0
    assert (again / csvs[0].name).read_text() == csvs[0].read_text()


def test_generate_to_csv_path_with_several_prompts(model_dir, tmp_path):
    target = tmp_path / "takes" / "face.csv"
    assert main(["generate", "A person blinks", "A person frowns", "--model", str(model_dir), "--frames", "25",
                 "--steps", "2", "--scheduler", "dpmsolver++", "--out", str(target)]) == 0  # fmt: skip
    names = sorted(p.name for p in target.parent.iterdir())
    assert names == ["face_00.csv", "face_00.json", "face_00.png", "face_01.csv", "face_01.json", "face_01.png"]
    assert read_livelink_csv(target.parent / "face_01.csv").num_frames == 75


def test_generate_passes_eta_and_guidance_rescale(model_dir, tmp_path, capsys):
    base = ["generate", "A person blinks", "--model", str(model_dir), "--frames", "25", "--steps", "3"]
    assert main(base + ["--eta", "0.5", "--guidance-rescale", "0.7", "--out", str(tmp_path / "a.csv")]) == 0
    clip = FaceMotion.from_dict(json.loads((tmp_path / "a.json").read_text()))
    assert clip.metadata["eta"] == 0.5 and clip.metadata["guidance_rescale"] == 0.7
    assert main(base + ["--out", str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_text() != (tmp_path / "b.csv").read_text()
    assert main(base + ["--scheduler", "dpmsolver++", "--eta", "0.5", "--out", str(tmp_path / "c.csv")]) == 2
    assert "applies to DDIM" in capsys.readouterr().err


def test_generate_errors_are_one_line(model_dir, tmp_path, capsys):
    assert main(["generate", "A person smiles", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "model_index.json" in capsys.readouterr().err
    assert main(["generate", "A person smiles", "--model", str(model_dir), "--duration", "30", "--steps", "1",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "outside [20, 196]" in capsys.readouterr().err
    assert main(["generate", " ", "--model", str(model_dir), "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_generate_help():
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0


def test_generate_prompts_file_glb_and_raw(model_dir, tmp_path, capsys):
    from express4d_hf.export.gltf import glb_animation_values

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# takes for the shoot\nA person blinks\n\nA person frowns\nA person smiles\n")
    out = tmp_path / "out"
    base = ["generate", "--model", str(model_dir), "--frames", "25", "--steps", "2", "--seed", "3"]
    assert main(base + ["--prompts", str(prompts), "--batch-size", "2", "--glb", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.csv"))
    assert names == ["00_a-person-blinks.csv", "01_a-person-frowns.csv", "02_a-person-smiles.csv"]
    assert all((out / n).with_suffix(".glb").is_file() for n in names) and "+ .json, .png, .glb" in capsys.readouterr().out
    for name in names:  # an untrained model overshoots; every exported blendshape is inside [0, 1]
        values = read_livelink_csv(out / name).values
        assert values[:, :52].min() >= 0 and values[:, :52].max() <= 1
        assert FaceMotion.from_dict(json.loads((out / name).with_suffix(".json").read_text())).metadata["blendshapes_clamped"]
    weights = glb_animation_values((out / names[0]).with_suffix(".glb").read_bytes())["weights"]
    assert weights.min() >= 0 and weights.max() <= 1

    # a take does not depend on its batch: the third prompt alone, seeded seed + 2, is the same take
    alone = tmp_path / "alone.csv"
    assert main(base[:-1] + ["5", "A person smiles", "--out", str(alone)]) == 0
    assert alone.read_text() == (out / names[2]).read_text()

    raw = tmp_path / "raw.csv"
    assert main(base + ["A person blinks", "--raw", "--out", str(raw)]) == 0
    values = read_livelink_csv(raw).values
    assert values[:, :52].min() < 0 or values[:, :52].max() > 1  # the model's own values, kept
    assert main(base + ["--prompts", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(base + ["--out", str(out)]) == 2
    assert "at least one PROMPT or --prompts FILE" in capsys.readouterr().err
