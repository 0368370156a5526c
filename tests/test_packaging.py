"""The built wheel carries everything the package reads at run time: card templates, the head, the viewer."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_card_templates_and_assets(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("express4d_hf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("dataset_card.md", "model_card_mdm.md", "model_card_t2m_gpt.md", "space_readme.md"):
        assert f"express4d_hf/hub_cards/{template}" in names
    assert "express4d_hf/assets/space/screenshot.jpg" in names  # `express4d space build` puts it in the Space
    head = {n for n in names if n.startswith("express4d_hf/assets/facecap_head/")}
    assert any(n.endswith(".glb") for n in head) and any("LICENSE" in n for n in head)  # the head keeps its licence
    assert any(n.startswith("express4d_hf/assets/viewer/") for n in names)
    assert not any(n.startswith(("tests/", "runs/", "bench/")) for n in names)
