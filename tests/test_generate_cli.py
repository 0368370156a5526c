"""``express4d generate``: CSV (60 fps) + JSON + PNG from a saved pipeline folder, and its errors."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import pytest
import torch

from express4d_hf import FaceMotion, read_livelink_csv
from express4d_hf.cli import main
from express4d_hf.models.mdm import MDMDenoiser
from express4d_hf.pipelines.mdm import Express4DMDMPipeline


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    np.testing.assert_allclose(motion.values, clip.resample(60).values, atol=1e-5)
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
