"""Write a :class:`~express4d_hf.livelink.FaceMotion` as an animated glTF 2.0 binary (GLB) of the Face Cap head.

The GLB holds the whole head (head with its 52 ARKit morph targets, teeth, eyes, the texture) and one
animation: the head mesh's morph target ``weights`` follow the 52 blendshape channels, the
``HeadRotation`` node turns with HeadYaw/HeadPitch/HeadRoll about the base of the skull, and the
``LeftEyeRotation`` / ``RightEyeRotation`` nodes with the eye yaw and pitch about the eyeball centres
(quaternion ``rotation`` channels, written only when those channels are not all zero). Samplers are
``LINEAR`` and keyframes sit at the motion's own frame times, so players interpolate between frames.

Conventions (so the file means the same thing in three.js, Blender and any glTF viewer):

* metres, +Y up, the face looking down +Z (glTF's "front"); "Left" is the face's own left (+X),
  as in ARKit: ``EyeBlinkLeft`` closes the eye at +X and ``LeftEyeYaw`` turns that eye.
* morph target names are our channel names (``EyeBlinkLeft``...) in ``mesh.extras.targetNames``
  (read by three.js ``morphTargetDictionary`` and Blender's shape keys), in the order of
  :data:`express4d_hf.arkit.BLENDSHAPES`; Apple's raw names are in ``mesh.extras.appleNames``.
* rotations: node rotation = ``Ry(yaw) * Rx(pitch) * Rz(roll)``, right-handed about those axes, in radians
  (positive yaw turns the face to its left, positive pitch tips the chin down, positive roll tilts
  the head towards its right shoulder). Live Link Face's own sign conventions are not documented; flip a
  sign in :data:`ROTATION_SIGNS` if a capture turns the wrong way.

The morph targets are stored as glTF *sparse* accessors (only the vertices a blendshape moves, float32),
which keeps the head at ~1.3 MB with its 1024 px texture. The head's MIT licence notice goes into
``asset.copyright`` and ``asset.extras``, and :func:`motion_to_gltf` writes ``<name>.LICENSE.txt`` next
to every GLB.

>>> import numpy as np
>>> from express4d_hf.livelink import FaceMotion
>>> glb = motion_to_glb_bytes(FaceMotion(np.zeros((3, 61), np.float32), fps=30))
>>> doc, _ = read_glb(glb); len(doc["animations"][0]["channels"]), doc["meshes"][0]["extras"]["targetNames"][0]
(1, 'EyeBlinkLeft')
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.arkit import BLENDSHAPES, CHANNEL_INDEX, apple_name
from ..core.io import atomic_write_bytes
from .facecap import (
    HEAD_COPYRIGHT,
    HEAD_GLB_PATH,
    HEAD_SOURCE_URL,
    FaceCapHead,
    FaceCapMesh,
    MorphTarget,
    head_glb_bytes,
    licence_notice,
    read_facecap_fbx,
)

if TYPE_CHECKING:
    from ..core.motion import FaceMotion

GLB_MAGIC = b"glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

FLOAT, UINT8, UINT16, UINT32 = 5126, 5121, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_DTYPES = {FLOAT: np.float32, UINT8: np.uint8, UINT16: np.uint16, UINT32: np.uint32, 5120: np.int8, 5122: np.int16}

#: Node names of the rotation pivots (what a viewer animates) and the Live Link channels driving them.
HEAD_NODE = "HeadRotation"
EYE_NODES = {"Left": "LeftEyeRotation", "Right": "RightEyeRotation"}
HEAD_CHANNELS = ("HeadYaw", "HeadPitch", "HeadRoll")
EYE_CHANNELS = {"Left": ("LeftEyeYaw", "LeftEyePitch"), "Right": ("RightEyeYaw", "RightEyePitch")}
#: Multipliers applied to (yaw, pitch, roll) before building rotations (see the module docstring).
ROTATION_SIGNS = (1.0, 1.0, 1.0)

ASSET_FORMAT = "express4d-hf/facecap-head/1"


class GltfFormatError(ValueError):
    """A GLB this package cannot read (not a GLB, or not one written by :mod:`express4d_hf.export.gltf`)."""


# =====================================================================================================
# Writing
# =====================================================================================================
class _GlbBuilder:
    """Collects one binary buffer, its bufferViews and accessors (every view starts 4-byte aligned)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.buffer_views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, raw: bytes, target: int | None = None) -> int:
        self.data.extend(b"\x00" * (-len(self.data) % 4))
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self.data.extend(raw)
        self.buffer_views.append(view)
        return len(self.buffer_views) - 1

    def accessor(
        self, array: np.ndarray, kind: str, component: int = FLOAT, target: int | None = None, bounds: bool = False
    ) -> int:
        array = np.ascontiguousarray(array, dtype=_DTYPES[component])
        count = array.shape[0] if array.ndim else 1
        accessor: dict[str, Any] = {
            "bufferView": self.view(array.tobytes(), target), "componentType": component, "count": int(count),
            "type": kind,
        }  # fmt: skip
        if bounds:
            _set_bounds(accessor, array.reshape(count, -1))
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def sparse_vec3(self, count: int, indices_view: int, index_component: int, values: np.ndarray, bounds: bool) -> int:
        """A VEC3 float accessor of ``count`` zeros except at the rows of ``indices_view`` (shared between targets)."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        accessor: dict[str, Any] = {
            "componentType": FLOAT, "count": int(count), "type": "VEC3",
            "sparse": {
                "count": len(values),
                "indices": {"bufferView": indices_view, "componentType": index_component},
                "values": {"bufferView": self.view(values.tobytes())},
            },
        }  # fmt: skip
        if bounds:  # bounds of the dense array: the untouched vertices contribute zeros
            _set_bounds(accessor, np.vstack([values, np.zeros((1, 3), np.float32)]) if len(values) < count else values)
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _set_bounds(accessor: dict[str, Any], rows: np.ndarray) -> None:
    accessor["min"] = [float(v) for v in rows.min(axis=0)]
    accessor["max"] = [float(v) for v in rows.max(axis=0)]


def _index_component(num_vertices: int) -> int:
    return UINT16 if num_vertices < 65535 else UINT32


def _write_mesh(builder: _GlbBuilder, mesh: FaceCapMesh, material: int) -> dict[str, Any]:
    """A glTF mesh (one triangle primitive) with sparse morph targets in :data:`BLENDSHAPES` order."""
    n = mesh.num_vertices
    index_type = _index_component(n)
    primitive: dict[str, Any] = {
        "attributes": {
            "POSITION": builder.accessor(mesh.positions, "VEC3", target=ARRAY_BUFFER, bounds=True),
            "NORMAL": builder.accessor(mesh.normals, "VEC3", target=ARRAY_BUFFER),
            "TEXCOORD_0": builder.accessor(mesh.uvs, "VEC2", target=ARRAY_BUFFER),
        },
        "indices": builder.accessor(mesh.faces.reshape(-1), "SCALAR", index_type, target=ELEMENT_ARRAY_BUFFER),
        "material": material,
        "mode": 4,
    }
    result: dict[str, Any] = {"name": mesh.name, "primitives": [primitive]}
    if mesh.morph_targets:
        names = [c for c in BLENDSHAPES if c in mesh.morph_targets]
        targets = []
        for name in names:
            target = mesh.morph_targets[name]
            rows = np.ascontiguousarray(target.indices, dtype=_DTYPES[index_type])
            indices_view = builder.view(rows.tobytes())  # one index list shared by POSITION and NORMAL
            entry = {"POSITION": builder.sparse_vec3(n, indices_view, index_type, target.deltas, bounds=True)}
            if target.normal_deltas is not None:
                entry["NORMAL"] = builder.sparse_vec3(n, indices_view, index_type, target.normal_deltas, bounds=False)
            targets.append(entry)
        primitive["targets"] = targets
        result["weights"] = [0.0] * len(names)
        result["extras"] = {"targetNames": names, "appleNames": [apple_name(c) for c in names]}
    return result


def _asset_block(extra_notice: str | None = None) -> dict[str, Any]:
    from ..core.constants import __version__

    return {
        "version": "2.0",
        "generator": f"express4d-hf {__version__}",
        "copyright": HEAD_COPYRIGHT + (f"; {extra_notice}" if extra_notice else ""),
        "extras": {
            "head": "Face Cap generic head by Niels Jansson (hizzlehoff)",
            "headLicense": "MIT",
            "headSource": HEAD_SOURCE_URL,
            "notice": "The head is MIT-licensed: keep its copyright and licence notice with any copy "
            "(see the .LICENSE.txt file written next to this GLB).",
        },
    }


def _head_document(head: FaceCapHead, builder: _GlbBuilder) -> tuple[dict[str, Any], dict[str, int]]:
    """The glTF JSON of the bare head (nodes, meshes, material, texture) and the node index by name."""
    material: dict[str, Any] = {
        "name": "lambert5",
        "pbrMetallicRoughness": {
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
            "metallicFactor": 0.0,
            "roughnessFactor": 0.8,
        },
        "doubleSided": False,
    }
    doc: dict[str, Any] = {"asset": _asset_block(), "scene": 0, "materials": [material]}
    if head.texture:
        doc["images"] = [
            {"name": "FaceCapHeadGeneric", "mimeType": head.texture_mime, "bufferView": builder.view(head.texture)}
        ]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 10497, "wrapT": 10497}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}

    nodes: list[dict[str, Any]] = []
    index: dict[str, int] = {}

    def add(node: dict[str, Any]) -> int:
        nodes.append(node)
        index[node["name"]] = len(nodes) - 1
        return len(nodes) - 1

    meshes: list[dict[str, Any]] = []
    mesh_nodes: dict[str, int] = {}
    for name, mesh in head.meshes.items():
        meshes.append(_write_mesh(builder, mesh, 0))
        mesh_nodes[name] = add({"name": name, "mesh": len(meshes) - 1})
    eye_for_side = head.eye_for_side
    eye_meshes = set(eye_for_side.values())

    offset_children = [mesh_nodes[n] for n in head.meshes if n not in eye_meshes]
    for side in ("Left", "Right"):
        mesh_name = eye_for_side[side]
        pivot = [float(v) for v in head.eye_pivots[mesh_name]]
        # Eye vertices stay in the head's rest frame: pivot node at +pivot, mesh node at -pivot.
        nodes[mesh_nodes[mesh_name]]["translation"] = [-v for v in pivot]
        nodes[mesh_nodes[mesh_name]]["extras"] = {"faceSide": side.lower()}
        offset_children.append(
            add({"name": EYE_NODES[side], "translation": pivot, "children": [mesh_nodes[mesh_name]],
                 "extras": {"channels": list(EYE_CHANNELS[side]), "mesh": mesh_name}})
        )  # fmt: skip
    head_pivot = [float(v) for v in head.head_pivot]
    offset = add({"name": "HeadOffset", "translation": [-v for v in head_pivot], "children": offset_children})
    rotation = add(
        {
            "name": HEAD_NODE,
            "translation": head_pivot,
            "children": [offset],
            "extras": {"channels": list(HEAD_CHANNELS)},
        }
    )
    root = add({"name": "FaceCapHead", "children": [rotation]})
    doc["nodes"] = nodes
    doc["meshes"] = meshes
    doc["scenes"] = [{
        "name": "FaceCapHead", "nodes": [root],
        "extras": {
            "format": ASSET_FORMAT,
            "headMesh": head.head.name,
            "headPivot": head_pivot,
            "eyePivots": {k: [float(x) for x in v] for k, v in head.eye_pivots.items()},
            "eyeForSide": eye_for_side,
            "headSource": head.source,
        },
    }]  # fmt: skip
    return doc, index


def _glb(doc: dict[str, Any], builder: _GlbBuilder) -> bytes:
    """Finish ``doc`` with the buffer and pack the GLB (JSON padded with spaces, BIN with zeros)."""
    builder.data.extend(b"\x00" * (-len(builder.data) % 4))
    doc["buffers"] = [{"byteLength": len(builder.data)}]
    doc["bufferViews"] = builder.buffer_views
    doc["accessors"] = builder.accessors
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(builder.data)
    return b"".join([
        struct.pack("<4sII", GLB_MAGIC, GLB_VERSION, total),
        struct.pack("<II", len(text), CHUNK_JSON), text,
        struct.pack("<II", len(builder.data), CHUNK_BIN), bytes(builder.data),
    ])  # fmt: skip


def head_to_glb(head: FaceCapHead) -> bytes:
    """The bare head as GLB bytes (morph weights 0, no animation). See also :func:`~.facecap.head_glb_bytes`."""
    builder = _GlbBuilder()
    doc, _ = _head_document(head, builder)
    return _glb(doc, builder)


# --- animation ---------------------------------------------------------------------------------------------
def euler_to_quaternion(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray | None = None) -> np.ndarray:
    """glTF quaternions ``[..., (x, y, z, w)]`` of ``Ry(yaw) * Rx(pitch) * Rz(roll)`` (radians).

    Consecutive quaternions are kept in one hemisphere so LINEAR (slerp) playback takes the short way.

    >>> q = euler_to_quaternion(np.array([math.pi / 2]), np.array([0.0]))
    >>> [round(float(v), 4) for v in q[0]]  # 90 degrees about +Y
    [0.0, 0.7071, 0.0, 0.7071]
    """
    yaw, pitch = np.asarray(yaw, np.float64), np.asarray(pitch, np.float64)
    roll = np.zeros_like(yaw) if roll is None else np.asarray(roll, np.float64)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    # q = qy * qx * qz with qy = (0, sy, 0, cy), qx = (sp, 0, 0, cp), qz = (0, 0, sr, cr)
    x = cy * sp * cr + sy * cp * sr
    y = sy * cp * cr - cy * sp * sr
    z = cy * cp * sr - sy * sp * cr
    w = cy * cp * cr + sy * sp * sr
    q = np.stack([x, y, z, w], axis=-1)
    if q.ndim == 2 and len(q) > 1:
        flips = np.cumsum(np.r_[0, (np.einsum("ij,ij->i", q[1:], q[:-1]) < 0).astype(np.int64)]) % 2
        q[flips == 1] *= -1
    return q.astype(np.float32)


def _columns(values: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return values[:, [CHANNEL_INDEX[n] for n in names]].astype(np.float64)


def _add_animation(
    doc: dict[str, Any], builder: _GlbBuilder, index: dict[str, int], head: FaceCapHead, motion: FaceMotion
) -> None:
    values = motion.values
    if not np.isfinite(values).all():
        frame = int(np.argwhere(~np.isfinite(values))[0][0])
        raise ValueError(f"the motion holds NaN or infinite values (first at frame {frame}); clean it before export")
    times = (np.arange(motion.num_frames, dtype=np.float64) / motion.fps).astype(np.float32)
    if motion.num_frames > 1 and not (np.diff(times) > 0).all():
        raise ValueError(f"{motion.num_frames} frames at {motion.fps} fps give keyframe times float32 cannot order")
    time_accessor = builder.accessor(times, "SCALAR", bounds=True)
    samplers: list[dict[str, Any]] = []
    channels: list[dict[str, Any]] = []

    def channel(node: str, path: str, output: int) -> None:
        samplers.append({"input": time_accessor, "output": output, "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": index[node], "path": path}})

    names = head.morph_target_names
    weights = _columns(values, tuple(names)).astype(np.float32)  # [T, 52], keyframe-major as glTF wants
    channel(head.head.name, "weights", builder.accessor(weights.reshape(-1), "SCALAR"))

    signs = ROTATION_SIGNS
    head_angles = _columns(values, HEAD_CHANNELS)
    if np.abs(head_angles).max(initial=0.0) > 0:
        q = euler_to_quaternion(
            signs[0] * head_angles[:, 0], signs[1] * head_angles[:, 1], signs[2] * head_angles[:, 2]
        )
        channel(HEAD_NODE, "rotation", builder.accessor(q, "VEC4"))
    for side in ("Left", "Right"):
        angles = _columns(values, EYE_CHANNELS[side])
        if np.abs(angles).max(initial=0.0) > 0:
            q = euler_to_quaternion(signs[0] * angles[:, 0], signs[1] * angles[:, 1])
            channel(EYE_NODES[side], "rotation", builder.accessor(q, "VEC4"))

    name = (motion.caption or "FaceMotion").strip()[:120] or "FaceMotion"
    doc["animations"] = [{
        "name": name, "samplers": samplers, "channels": channels,
        "extras": {"fps": motion.fps, "frames": motion.num_frames, "caption": motion.caption},
    }]  # fmt: skip


def motion_to_glb_bytes(
    motion: FaceMotion, head: FaceCapHead | None = None, fps: float | None = None, clamp: bool = False
) -> bytes:
    """The animated GLB of ``motion`` as bytes (for serving without touching disk; see :func:`motion_to_gltf`)."""
    head = load_head() if head is None else head
    if fps is not None and not math.isclose(float(fps), motion.fps):
        motion = motion.resample(fps)
    if clamp:
        values = motion.values.copy()
        values[:, : len(BLENDSHAPES)] = np.clip(values[:, : len(BLENDSHAPES)], 0.0, 1.0)
        motion = motion.replace(values=values)
    builder = _GlbBuilder()
    doc, index = _head_document(head, builder)
    doc["asset"] = _asset_block("animation generated by express4d-hf")
    _add_animation(doc, builder, index, head, motion)
    return _glb(doc, builder)


def licence_path_for(path: str | os.PathLike) -> Path:
    """``clip.glb`` -> ``clip.LICENSE.txt``: where the head's licence notice goes next to a derived file."""
    path = Path(path)
    return path.with_name(path.stem + ".LICENSE.txt")


def motion_to_gltf(
    motion: FaceMotion,
    path: str | os.PathLike,
    head: FaceCapHead | None = None,
    fps: float | None = None,
    clamp: bool = False,
) -> Path:
    """Write ``motion`` as an animated GLB of the Face Cap head, and its licence notice next to it.

    Args:
        motion: the performance; its 52 blendshapes drive the morph targets, head and eye rotations the nodes.
        path: the ``.glb`` to write (atomically). ``<stem>.LICENSE.txt`` is written beside it.
        head: the head to animate (default: the shipped one, :func:`load_head`).
        fps: resample the motion to this rate first (anti-aliased); default keeps its own rate.
        clamp: clip blendshape weights to [0, 1] (captures overshoot to ~1.08; generated motions may go further).

    Returns the GLB path.
    """
    path = Path(path)
    if path.suffix.lower() != ".glb":
        raise ValueError(f"{path}: motion_to_gltf writes binary glTF; give the file a .glb suffix")
    data = motion_to_glb_bytes(motion, head=head, fps=fps, clamp=clamp)
    atomic_write_bytes(path, data)
    atomic_write_bytes(licence_path_for(path), licence_notice().encode("utf-8"))
    return path


# =====================================================================================================
# Reading (the shipped head, tests, round trips)
# =====================================================================================================
def read_glb(data: bytes, source: str = "<bytes>") -> tuple[dict[str, Any], bytes]:
    """Split a GLB into its JSON document and BIN chunk, checking the container layout."""
    if len(data) < 20 or data[:4] != GLB_MAGIC:
        raise GltfFormatError(f"{source}: not a GLB (no 'glTF' magic)")
    _, version, length = struct.unpack_from("<4sII", data, 0)
    if version != GLB_VERSION:
        raise GltfFormatError(f"{source}: GLB version {version}, expected 2")
    if length != len(data):
        raise GltfFormatError(f"{source}: header says {length} bytes but the file has {len(data)} (truncated?)")
    json_length, json_type = struct.unpack_from("<II", data, 12)
    if json_type != CHUNK_JSON:
        raise GltfFormatError(f"{source}: the first chunk is not JSON")
    doc = json.loads(data[20 : 20 + json_length].decode("utf-8"))
    binary = b""
    offset = 20 + json_length
    if offset + 8 <= len(data):
        bin_length, bin_type = struct.unpack_from("<II", data, offset)
        if bin_type != CHUNK_BIN:
            raise GltfFormatError(f"{source}: the second chunk is not BIN")
        binary = data[offset + 8 : offset + 8 + bin_length]
    return doc, binary


def _view_bytes(doc: dict[str, Any], binary: bytes, view_index: int) -> tuple[bytes, int]:
    view = doc["bufferViews"][view_index]
    start = view.get("byteOffset", 0)
    return binary[start : start + view["byteLength"]], view.get("byteStride", 0)


def _read_plain(
    doc: dict[str, Any], binary: bytes, view_index: int, offset: int, count: int, component: int, width: int
) -> np.ndarray:
    raw, stride = _view_bytes(doc, binary, view_index)
    dtype = np.dtype(_DTYPES[component])
    element = dtype.itemsize * width
    if stride and stride != element:
        rows = np.frombuffer(raw, np.uint8, count=(count - 1) * stride + element, offset=offset)
        idx = (np.arange(count)[:, None] * stride + np.arange(element)[None, :]).reshape(-1)
        return rows[idx].view(dtype).reshape(count, width)
    return np.frombuffer(raw, dtype, count=count * width, offset=offset).reshape(count, width)


def read_accessor(doc: dict[str, Any], binary: bytes, accessor_index: int) -> np.ndarray:
    """An accessor's data as a ``[count, components]`` array (sparse substitution applied)."""
    acc = doc["accessors"][accessor_index]
    width = _COMPONENTS[acc["type"]] if acc["type"] in _COMPONENTS else {"MAT2": 4, "MAT3": 9, "MAT4": 16}[acc["type"]]
    count, component = acc["count"], acc["componentType"]
    if "bufferView" in acc:
        out = _read_plain(doc, binary, acc["bufferView"], acc.get("byteOffset", 0), count, component, width).copy()
    else:
        out = np.zeros((count, width), _DTYPES[component])
    if "sparse" in acc:
        rows, values = read_sparse(doc, binary, accessor_index)
        out[rows] = values
    return out


def read_sparse(doc: dict[str, Any], binary: bytes, accessor_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(indices, values)`` of a sparse accessor, without densifying it."""
    acc = doc["accessors"][accessor_index]
    sparse = acc["sparse"]
    width = _COMPONENTS[acc["type"]]
    ind, val = sparse["indices"], sparse["values"]
    rows = _read_plain(
        doc, binary, ind["bufferView"], ind.get("byteOffset", 0), sparse["count"], ind["componentType"], 1
    )
    values = _read_plain(
        doc, binary, val["bufferView"], val.get("byteOffset", 0), sparse["count"], acc["componentType"], width
    )
    return rows.reshape(-1).astype(np.int64), values.copy()


def _read_morph(doc: dict[str, Any], binary: bytes, target: dict[str, int]) -> MorphTarget:
    position = doc["accessors"][target["POSITION"]]
    normal_index = target.get("NORMAL")
    if "sparse" in position and "bufferView" not in position:
        rows, deltas = read_sparse(doc, binary, target["POSITION"])
        normals = None
        if normal_index is not None:
            normals = read_accessor(doc, binary, normal_index)[rows]
        return MorphTarget(
            rows.astype(np.int32), deltas.astype(np.float32), None if normals is None else normals.astype(np.float32)
        )
    dense = read_accessor(doc, binary, target["POSITION"])
    dense_normals = read_accessor(doc, binary, normal_index) if normal_index is not None else None
    changed = np.abs(dense).max(axis=1) > 0
    if dense_normals is not None:
        changed |= np.abs(dense_normals).max(axis=1) > 0
    rows = np.flatnonzero(changed).astype(np.int32)
    return MorphTarget(
        rows, dense[rows].astype(np.float32), None if dense_normals is None else dense_normals[rows].astype(np.float32)
    )


def glb_to_head(data: bytes, source: str = "<bytes>") -> FaceCapHead:
    """Rebuild a :class:`FaceCapHead` from a GLB written by this module (the shipped head or an export)."""
    doc, binary = read_glb(data, source)
    scene = (doc.get("scenes") or [{}])[doc.get("scene", 0)]
    info = scene.get("extras") or {}
    if info.get("format") != ASSET_FORMAT:
        raise GltfFormatError(
            f"{source}: not a Face Cap head written by express4d-hf (scene extras.format is {info.get('format')!r}, "
            f"expected {ASSET_FORMAT!r}); regenerate it with scripts/convert_facecap_head.py"
        )
    meshes: dict[str, FaceCapMesh] = {}
    for node in doc["nodes"]:
        if "mesh" not in node:
            continue
        gl_mesh = doc["meshes"][node["mesh"]]
        primitive = gl_mesh["primitives"][0]
        attributes = primitive["attributes"]
        positions = read_accessor(doc, binary, attributes["POSITION"]).astype(np.float32)
        mesh = FaceCapMesh(
            name=node["name"],
            positions=positions,
            normals=read_accessor(doc, binary, attributes["NORMAL"]).astype(np.float32),
            uvs=read_accessor(doc, binary, attributes["TEXCOORD_0"]).astype(np.float32),
            faces=read_accessor(doc, binary, primitive["indices"]).reshape(-1, 3).astype(np.uint32),
        )
        names = (gl_mesh.get("extras") or {}).get("targetNames", [])
        targets = primitive.get("targets", [])
        if len(names) != len(targets):
            raise GltfFormatError(
                f"{source}: mesh {node['name']!r} has {len(targets)} morph targets but {len(names)} targetNames"
            )
        mesh.morph_targets = {n: _read_morph(doc, binary, t) for n, t in zip(names, targets)}
        meshes[mesh.name] = mesh
    texture, mime = None, "image/png"
    if doc.get("images"):
        image = doc["images"][0]
        texture = _view_bytes(doc, binary, image["bufferView"])[0]
        mime = image.get("mimeType", mime)
    return FaceCapHead(
        meshes=meshes,
        eye_pivots={k: np.asarray(v, np.float32) for k, v in info["eyePivots"].items()},
        head_pivot=np.asarray(info["headPivot"], np.float32),
        texture=bytes(texture) if texture is not None else None,
        texture_mime=mime,
        copyright=doc.get("asset", {}).get("copyright", HEAD_COPYRIGHT),
        source=info.get("headSource", source),
    )


def glb_animation_values(data: bytes) -> dict[str, np.ndarray]:
    """Read back an exported animation: ``{"times": [T], "weights": [T, 52], "<node>": [T, 4] quaternions}``."""
    doc, binary = read_glb(data)
    animation = doc["animations"][0]
    out: dict[str, np.ndarray] = {}
    for channel in animation["channels"]:
        sampler = animation["samplers"][channel["sampler"]]
        out.setdefault("times", read_accessor(doc, binary, sampler["input"]).reshape(-1))
        values = read_accessor(doc, binary, sampler["output"])
        node = doc["nodes"][channel["target"]["node"]]
        if channel["target"]["path"] == "weights":
            out["weights"] = values.reshape(len(out["times"]), -1)
        else:
            out[node["name"]] = values.reshape(len(out["times"]), -1)
    return out


_HEAD_CACHE: dict[str, FaceCapHead] = {}


def load_head(path: str | os.PathLike | None = None) -> FaceCapHead:
    """The Face Cap head as arrays, from the shipped GLB (or another GLB written by this package).

    Also accepts the original ``.fbx`` (parsed with :func:`read_facecap_fbx`). The result is cached per
    path; treat it as read-only.
    """
    key = str(Path(path).resolve()) if path is not None else ""
    if key not in _HEAD_CACHE:
        if path is not None and Path(path).suffix.lower() == ".fbx":
            _HEAD_CACHE[key] = read_facecap_fbx(path)
        else:
            data = head_glb_bytes() if path is None else Path(path).read_bytes()
            _HEAD_CACHE[key] = glb_to_head(data, source=str(path or HEAD_GLB_PATH))
    return _HEAD_CACHE[key]
