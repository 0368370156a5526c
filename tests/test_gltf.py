"""The Face Cap head: FBX reader, shipped asset, animated GLB export (structure, values, licence)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from express4d_hf.core.arkit import BLENDSHAPES, CHANNEL_INDEX, CHANNELS, try_canonical_channel_name
from express4d_hf.export import facecap, gltf
from express4d_hf.export.facecap import FbxParseError, head_glb_bytes, parse_fbx_ascii, read_facecap_fbx
from express4d_hf.export.gltf import (
    GltfFormatError,
    glb_animation_values,
    load_head,
    motion_to_glb_bytes,
    motion_to_gltf,
    read_accessor,
    read_glb,
)
from express4d_hf.livelink import FaceMotion

REPO = Path(__file__).resolve().parents[1]
FBX = Path(
    os.environ.get("EXPRESS4D_FACECAP_FBX", REPO.parent / "shared/assets/facecap-generic-head/FaceCapHeadGeneric.fbx")
)
needs_fbx = pytest.mark.skipif(not FBX.is_file(), reason=f"the source FBX is not at {FBX} (set EXPRESS4D_FACECAP_FBX)")


@pytest.fixture(scope="module")
def fbx_head():
    if not FBX.is_file():
        pytest.skip(f"the source FBX is not at {FBX}")
    start = time.perf_counter()
    head = read_facecap_fbx(FBX)
    return head, time.perf_counter() - start


def synthetic_motion(seconds: float = 2.0, fps: float = 60.0, rotations: bool = True, seed: int = 0) -> FaceMotion:
    rng = np.random.default_rng(seed)
    frames = round(seconds * fps)
    t = np.arange(frames) / fps
    values = np.zeros((frames, len(CHANNELS)), np.float32)
    values[:, : len(BLENDSHAPES)] = rng.uniform(0.0, 1.0, (frames, len(BLENDSHAPES)))
    if rotations:
        values[:, CHANNEL_INDEX["HeadYaw"]] = 0.3 * np.sin(2 * np.pi * 0.5 * t)
        values[:, CHANNEL_INDEX["HeadPitch"]] = 0.1 * np.cos(2 * np.pi * 0.5 * t)
        values[:, CHANNEL_INDEX["HeadRoll"]] = 0.05
        for side in ("Left", "Right"):
            values[:, CHANNEL_INDEX[f"{side}EyeYaw"]] = 0.2 * np.sin(2 * np.pi * t)
            values[:, CHANNEL_INDEX[f"{side}EyePitch"]] = -0.1
    return FaceMotion(values, fps=fps, caption="A person smiles and looks to the left")


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector ``v`` by the glTF quaternion ``q`` (x, y, z, w)."""
    xyz, w = q[:3].astype(np.float64), float(q[3])
    return v + 2 * np.cross(xyz, np.cross(xyz, v) + w * v)


def euler_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def check_glb_structure(data: bytes) -> dict:
    """Structural checks a strict loader (Blender, three.js, the Khronos validator) relies on."""
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    doc = json.loads(data[20 : 20 + json_length])
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + json_length)
    assert bin_type == 0x004E4942 and bin_length % 4 == 0
    assert 20 + json_length + 8 + bin_length == len(data)
    assert doc["asset"]["version"] == "2.0"
    assert doc["buffers"] == [{"byteLength": bin_length}]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= bin_length
    binary = data[20 + json_length + 8 :]
    for i, acc in enumerate(doc["accessors"]):
        assert acc.get("byteOffset", 0) % 4 == 0
        assert "bufferView" in acc or "sparse" in acc
        if "sparse" in acc:
            for part in ("indices", "values"):  # sparse views must not be bound as vertex/index buffers
                assert "target" not in doc["bufferViews"][acc["sparse"][part]["bufferView"]]
            rows, _ = gltf.read_sparse(doc, binary, i)
            assert (np.diff(rows) > 0).all() and rows.max() < acc["count"]
    for mesh in doc["meshes"]:
        for prim in mesh["primitives"]:
            positions = [prim["attributes"]["POSITION"]] + [t["POSITION"] for t in prim.get("targets", [])]
            for index in positions:
                acc, values = doc["accessors"][index], read_accessor(doc, binary, index)
                assert np.allclose(acc["min"], values.min(axis=0)) and np.allclose(acc["max"], values.max(axis=0))
            count = doc["accessors"][prim["attributes"]["POSITION"]]["count"]
            assert read_accessor(doc, binary, prim["indices"]).max() < count
            if "targets" in prim:
                assert len(mesh["extras"]["targetNames"]) == len(prim["targets"]) == len(mesh["weights"])
    for animation in doc.get("animations", []):
        for sampler in animation["samplers"]:
            assert sampler["interpolation"] == "LINEAR"
            times = read_accessor(doc, binary, sampler["input"]).reshape(-1)
            acc = doc["accessors"][sampler["input"]]
            assert (np.diff(times) > 0).all() and acc["min"] == [float(times[0])] and acc["max"] == [float(times[-1])]
    return doc


# --- the FBX syntax ------------------------------------------------------------------------------------------
def test_tokenizer_reads_fbx_ascii_syntax():
    text = (
        "; FBX 7.4.0 project file\n"
        "Objects:  {\n"
        '\tModel: 12345678901234, "Model::head; not a comment {x: 1}", "Mesh" {\n'
        "\t\tProperties70:  {\n"
        '\t\t\tP: "Lcl Translation", "Lcl Translation", "", "A",-3.5,2.6e-1,1\n'
        "\t\t}\n"
        "\t\tShading: Y\n"
        "\t\tVertices: *6 {\n\t\t\ta: 1,2,3,\n-4.5e-006,5,6\n\t\t} \n"
        "\t\tEmpty: *0 {\n\t\t\ta: \n\t\t}\n"
        '\t\tContent: ,\n "aGVsbG8="\n'
        "\t}\n"
        "}\n"
    )
    root = parse_fbx_ascii(text)
    model = root.child("Objects").child("Model")
    assert model.props == [12345678901234, "Model::head; not a comment {x: 1}", "Mesh"]
    assert model.properties70()["Lcl Translation"] == [-3.5, 0.26, 1]
    assert model.child("Shading").props == ["Y"]
    assert model.array("Vertices").tolist() == [1, 2, 3, -4.5e-6, 5, 6]
    assert model.array("Empty").size == 0
    assert model.child("Content").props == ["aGVsbG8="]
    assert model.line == 3


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("A:  {\n  B: 1\n", "never closed", 1),
        ("A:  {\n  V: *3 {\n   a: 1,2\n  }\n}\n", "declares *3 values but holds 2", 3),
        ("A:  {\n  V: *2 {\n   a: 1,x\n  }\n}\n", "not a number", 3),
        ("A: 1\n} \n", "expected a node name", 2),
    ],
)
def test_tokenizer_errors_name_the_line(text, message, line):
    with pytest.raises(FbxParseError, match=re.escape(message)) as info:
        parse_fbx_ascii(text, "broken.fbx")
    assert info.value.line == line and "broken.fbx" in str(info.value)


def test_binary_fbx_is_refused_with_a_fix(tmp_path):
    path = tmp_path / "binary.fbx"
    path.write_bytes(b"Kaydara FBX Binary  \x00\x1a\x00" + bytes(40))
    with pytest.raises(FbxParseError, match="export it as ASCII"):
        read_facecap_fbx(path)


# --- the source head -------------------------------------------------------------------------------------
def test_fbx_head_parses_fast_with_52_canonical_blendshapes(fbx_head):
    head, seconds = fbx_head
    assert seconds < 3.0, f"parsing the FBX took {seconds:.2f} s"
    assert set(head.meshes) == {"head", "eyeLeft", "eyeRight", "teeth"}
    names = head.morph_target_names
    assert len(names) == 52 and names == list(BLENDSHAPES)
    assert all(try_canonical_channel_name(n) == n for n in names)
    mesh = head.head
    assert len(mesh.faces) == 5032 and mesh.num_vertices >= 2659  # 2659 control points, split at UV seams
    assert len(head.meshes["teeth"].positions) == 614
    for m in head.meshes.values():
        assert m.faces.max() < m.num_vertices
        assert np.allclose(np.linalg.norm(m.normals, axis=1), 1.0, atol=1e-5)
        assert m.uvs.min() >= 0 and m.uvs.max() <= 1
    height = mesh.positions[:, 1].max() - mesh.positions[:, 1].min()
    assert 0.18 < height < 0.30, "positions should be in metres (a human head)"
    # Sparse deltas: each blendshape moves part of the face; TongueOut is a placeholder of the source.
    moved = {n: int((np.abs(t.deltas).max(axis=1) > 0).sum()) for n, t in mesh.morph_targets.items()}
    assert moved["TongueOut"] == 0 and all(100 < v < mesh.num_vertices for n, v in moved.items() if n != "TongueOut")
    assert head.texture == FBX.with_suffix(".png").read_bytes()


def test_fbx_head_geometry_follows_arkit_sides(fbx_head):
    head, _ = fbx_head
    mesh = head.head
    blink = mesh.morph_targets["EyeBlinkLeft"]
    rows = blink.indices[np.abs(blink.deltas).max(axis=1) > 0]
    assert mesh.positions[rows, 0].mean() > 0.02  # the face's left is +X
    jaw = mesh.morph_targets["JawOpen"]
    assert jaw.deltas[:, 1].min() < -0.03  # the chin drops by centimetres
    sides = head.eye_for_side
    assert head.eye_pivots[sides["Left"]][0] > 0 > head.eye_pivots[sides["Right"]][0]
    for name, pivot in head.eye_pivots.items():  # the pivot is the eyeball centre
        eye = head.meshes[name].positions
        assert np.allclose(pivot, (eye.min(axis=0) + eye.max(axis=0)) / 2, atol=0.002)


def test_shipped_head_is_the_converted_fbx(fbx_head, tmp_path):
    """The shipped GLB is what scripts/convert_facecap_head.py makes of the FBX (rerun it if this fails)."""
    spec = importlib.util.spec_from_file_location("convert_facecap_head", REPO / "scripts/convert_facecap_head.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--fbx", str(FBX), "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"facecap_head.glb", "LICENSE", "ATTRIBUTION.md", "NOTICE.md"}
    fresh = gltf.glb_to_head((tmp_path / "facecap_head.glb").read_bytes())
    head, _ = fbx_head
    shipped = load_head()
    assert shipped.texture == fresh.texture and shipped.texture != head.texture  # PNG metadata chunks dropped
    for name, mesh in head.meshes.items():
        for other in (shipped.meshes[name], fresh.meshes[name]):
            # Tolerances only absorb last-bit differences between BLAS/SIMD builds.
            assert np.array_equal(mesh.faces, other.faces) and np.allclose(mesh.uvs, other.uvs, atol=1e-7)
            assert np.allclose(mesh.positions, other.positions, atol=1e-7)
            assert np.allclose(mesh.normals, other.normals, atol=1e-5)
            assert list(mesh.morph_targets) == list(other.morph_targets)
            n = mesh.num_vertices
            for channel, target in mesh.morph_targets.items():
                mine = other.morph_targets[channel]
                assert np.allclose(target.dense(n), mine.dense(n), atol=1e-7)
                assert np.allclose(target.dense_normals(n), mine.dense_normals(n), atol=2e-3)


# --- the shipped asset -----------------------------------------------------------------------------------
def test_shipped_asset_is_small_and_carries_its_licence():
    folder = facecap.ASSET_DIR
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    assert {"facecap_head.glb", "LICENSE", "ATTRIBUTION.md", "NOTICE.md"} <= set(files)
    assert all(size < 4 * 1024 * 1024 for size in files.values()) and sum(files.values()) < 4 * 1024 * 1024
    assert "Copyright (c) 2019 niels jansson" in (folder / "LICENSE").read_text()
    assert "MIT" in (folder / "NOTICE.md").read_text()
    doc = check_glb_structure(head_glb_bytes())
    assert "animations" not in doc and "niels jansson" in doc["asset"]["copyright"]
    head_mesh = next(m for m in doc["meshes"] if "targets" in m["primitives"][0])
    assert head_mesh["extras"]["targetNames"] == list(BLENDSHAPES) and head_mesh["weights"] == [0.0] * 52
    assert doc["images"][0]["mimeType"] == "image/png" and "bufferView" in doc["images"][0]


def test_load_head_gives_arrays_for_the_viewer():
    head = load_head()
    assert load_head() is head  # cached
    assert head.vertices.shape[1] == 3 and head.faces.shape[1] == 3 and head.faces.max() < len(head.vertices)
    assert list(head.morph_targets) == list(BLENDSHAPES)
    smile = head.head.deformed({"MouthSmileLeft": 1.0})
    assert np.abs(smile - head.vertices).max() > 0.005
    assert head.texture.startswith(b"\x89PNG") and set(head.eye_pivots) == {"eyeLeft", "eyeRight"}


# --- the animated export -----------------------------------------------------------------------------------
def test_motion_export_round_trips(tmp_path):
    motion = synthetic_motion(seconds=2.0)
    path = motion_to_gltf(motion, tmp_path / "clip.glb")
    data = path.read_bytes()
    doc = check_glb_structure(data)
    assert len(data) < 3 * 1024 * 1024

    animation = doc["animations"][0]
    weights_sampler = next(
        animation["samplers"][c["sampler"]] for c in animation["channels"] if c["target"]["path"] == "weights"
    )
    assert doc["accessors"][weights_sampler["output"]]["count"] == motion.num_frames * 52
    back = glb_animation_values(data)
    assert np.allclose(back["times"], np.arange(motion.num_frames) / motion.fps, atol=1e-6)
    assert np.array_equal(back["weights"], motion.values[:, :52])
    assert animation["extras"]["caption"] == motion.caption

    # Rotation channels: each quaternion is Ry(yaw) Rx(pitch) Rz(roll) of that frame.
    assert {"HeadRotation", "LeftEyeRotation", "RightEyeRotation"} <= set(back)
    for frame in (0, 37, motion.num_frames - 1):
        yaw, pitch, roll = (float(motion.channel(c)[frame]) for c in ("HeadYaw", "HeadPitch", "HeadRoll"))
        for v in np.eye(3):
            assert np.allclose(rotate(back["HeadRotation"][frame], v), euler_matrix(yaw, pitch, roll) @ v, atol=1e-5)
        eye_yaw, eye_pitch = float(motion.channel("LeftEyeYaw")[frame]), float(motion.channel("LeftEyePitch")[frame])
        assert np.allclose(
            rotate(back["LeftEyeRotation"][frame], np.array([0, 0, 1.0])),
            euler_matrix(eye_yaw, eye_pitch, 0) @ [0, 0, 1],
            atol=1e-5,
        )

    # The licence notice travels with the file, in it and next to it.
    assert "niels jansson" in doc["asset"]["copyright"] and doc["asset"]["extras"]["headLicense"] == "MIT"
    notice = (tmp_path / "clip.LICENSE.txt").read_text()
    assert "Copyright (c) 2019 niels jansson" in notice and "Face Cap" in notice
    assert not list(tmp_path.glob(".*.tmp"))


def test_rotation_channels_only_for_channels_that_move():
    motion = synthetic_motion(seconds=0.5, rotations=False)
    doc, _ = read_glb(motion_to_glb_bytes(motion))
    assert [c["target"]["path"] for c in doc["animations"][0]["channels"]] == ["weights"]

    values = motion.values.copy()
    values[:, CHANNEL_INDEX["LeftEyeYaw"]] = 0.3  # the face's left eye looks to its left
    doc, binary = read_glb(motion_to_glb_bytes(motion.replace(values=values)))
    channels = doc["animations"][0]["channels"]
    targets = {doc["nodes"][c["target"]["node"]]["name"]: c for c in channels if c["target"]["path"] == "rotation"}
    assert set(targets) == {"LeftEyeRotation"}
    node = doc["nodes"][targets["LeftEyeRotation"]["target"]["node"]]
    assert node["translation"][0] > 0  # the pivot of the eye at +X, the face's left
    eye_mesh_node = doc["nodes"][node["children"][0]]
    eye_positions = read_accessor(
        doc, binary, doc["meshes"][eye_mesh_node["mesh"]]["primitives"][0]["attributes"]["POSITION"]
    )
    assert eye_positions[:, 0].mean() > 0


def test_fps_resamples_and_single_frame_exports():
    motion = synthetic_motion(seconds=1.0, fps=60)
    back = glb_animation_values(motion_to_glb_bytes(motion, fps=30))
    assert len(back["times"]) == 30 and np.allclose(np.diff(back["times"]), 1 / 30)
    one = glb_animation_values(motion_to_glb_bytes(motion.crop(0, 1)))
    assert one["weights"].shape == (1, 52)


def test_clamp_limits_weights():
    values = synthetic_motion(seconds=0.2).values.copy()
    values[:, 0] = 1.5
    values[:, 1] = -0.2
    back = glb_animation_values(motion_to_glb_bytes(FaceMotion(values, fps=60), clamp=True))
    assert back["weights"][:, 0].max() == 1.0 and back["weights"][:, 1].min() == 0.0


def test_export_errors_are_clear(tmp_path):
    motion = synthetic_motion(seconds=0.2)
    with pytest.raises(ValueError, match=r"\.glb suffix"):
        motion_to_gltf(motion, tmp_path / "clip.gltf")
    values = motion.values.copy()
    values[3, 5] = np.nan
    with pytest.raises(ValueError, match="frame 3"):
        motion_to_glb_bytes(FaceMotion(values, fps=60))
    with pytest.raises(GltfFormatError, match="not a GLB"):
        read_glb(b"PK\x03\x04 not a glb at all")
    foreign = gltf._glb({"asset": {"version": "2.0"}}, gltf._GlbBuilder())
    with pytest.raises(GltfFormatError, match="not a Face Cap head"):
        gltf.glb_to_head(foreign)
