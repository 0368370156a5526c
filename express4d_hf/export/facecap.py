"""The Face Cap generic head: read its ASCII FBX once, load the compact copy shipped in the package.

The head (MIT, (c) 2019 Niels Jansson, see ``express4d_hf/assets/facecap_head/ATTRIBUTION.md``) carries the
52 ARKit blendshapes as sparse vertex deltas, so any :class:`~express4d_hf.livelink.FaceMotion` can drive it
directly: no retargeting, no rig. This module has two layers:

* a small, fast tokenizer and tree builder for the FBX 7.x ASCII syntax (:func:`parse_fbx_ascii`): nodes
  ``Name: prop, prop {children}``, strings, numbers, bare words and numeric arrays ``*N { a: ... }``. The
  arrays (most of the 3.8 MB file) are sliced out and converted by numpy in one go, which keeps the whole
  read of the head at about 0.4 s on an idle 2-core CPU.
* :func:`read_facecap_fbx`, which turns that tree into a :class:`FaceCapHead`: world-space meshes in
  metres (head, eyes, teeth), split at UV seams so every vertex carries one UV (what glTF needs),
  triangulated, the blendshapes as sparse deltas keyed by our channel names
  (:func:`express4d_hf.arkit.canonical_channel_name`), the eye pivots for gaze, and the texture bytes.

Runtime code never needs the FBX: :func:`express4d_hf.export.gltf.load_head` reads the compact GLB shipped in the package
(``express4d_hf/assets/facecap_head/facecap_head.glb``, written by ``scripts/convert_facecap_head.py``).

>>> root = parse_fbx_ascii('; comment\\nGeo: 7, "Geometry::", "Mesh" {\\n  Vertices: *3 {\\n a: 1,2.5,-3e1\\n }\\n}\\n')
>>> geo = root.child("Geo"); geo.props, geo.array("Vertices").tolist()
([7, 'Geometry::', 'Mesh'], [1.0, 2.5, -30.0])
"""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..core.arkit import BLENDSHAPES, try_canonical_channel_name

#: The shipped, derived asset (see NOTICE.md next to it).
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "facecap_head"
HEAD_GLB_PATH = ASSET_DIR / "facecap_head.glb"
LICENSE_PATH = ASSET_DIR / "LICENSE"
ATTRIBUTION_PATH = ASSET_DIR / "ATTRIBUTION.md"

#: One line naming the head, its author and licence; written into every GLB derived from the head.
HEAD_COPYRIGHT = "Face Cap generic head: Copyright (c) 2019 niels jansson (MIT License)"
HEAD_SOURCE_URL = "https://github.com/hizzlehoff/FaceCapOSCReceiverExample"

EYE_MESHES = ("eyeLeft", "eyeRight")

FbxValue = str | int | float | np.ndarray


class FbxParseError(ValueError):
    """An FBX file this reader cannot use; the message names the file, the line and what was expected."""

    def __init__(self, source: str, reason: str, line: int | None = None):
        self.source, self.reason, self.line = source, reason, line
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


# =====================================================================================================
# FBX ASCII syntax
# =====================================================================================================
@dataclasses.dataclass
class FbxNode:
    """One FBX node: ``name: props... { children }``. Numeric arrays (``*N {a: ...}``) are one float64 prop."""

    name: str
    props: list[FbxValue]
    children: list[FbxNode]
    line: int = 0

    def child(self, name: str) -> FbxNode | None:
        """The first child called ``name``, or None."""
        return next((c for c in self.children if c.name == name), None)

    def children_named(self, name: str) -> list[FbxNode]:
        return [c for c in self.children if c.name == name]

    def array(self, name: str) -> np.ndarray:
        """The numeric array held by child ``name`` (empty when absent)."""
        node = self.child(name)
        if node is None or not node.props:
            return np.zeros(0)
        value = node.props[0]
        return value if isinstance(value, np.ndarray) else np.asarray(node.props, dtype=np.float64)

    def properties70(self) -> dict[str, list[FbxValue]]:
        """``Properties70`` as ``{name: values}`` (the type strings dropped): ``{"Lcl Translation": [x, y, z]}``."""
        block = self.child("Properties70")
        if block is None:
            return {}
        return {str(p.props[0]): p.props[4:] for p in block.children if p.name == "P" and len(p.props) >= 4}


# A token: whitespace and ';' comments are skipped first. Keys are identifiers glued to a colon.
_TOKEN = re.compile(
    r"""(?:\s+|;[^\n]*)*
    (?:(?P<key>[A-Za-z_][\w|]*):
      |"(?P<str>[^"]*)"
      |(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      |\*(?P<count>\d+)
      |(?P<punct>[{},])
      |(?P<word>[A-Za-z_][\w|.\-]*)
      |(?P<end>\Z))""",
    re.VERBOSE,
)


class _Scanner:
    """Recursive-descent reader over the FBX ASCII text (one instance per parse)."""

    def __init__(self, text: str, source: str):
        self.text, self.source, self.pos = text, source, 0
        self._line_cache: tuple[int, int] = (0, 1)  # (pos, line) of the last line-number lookup

    def line_at(self, pos: int) -> int:
        last_pos, last_line = self._line_cache
        line = (
            last_line + self.text.count("\n", last_pos, pos) if pos >= last_pos else self.text.count("\n", 0, pos) + 1
        )
        self._line_cache = (pos, line)
        return line

    def error(self, reason: str, pos: int | None = None) -> FbxParseError:
        return FbxParseError(self.source, reason, self.line_at(self.pos if pos is None else pos))

    def next(self) -> tuple[str, Any, int]:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            snippet = self.text[self.pos : self.pos + 30].strip().splitlines()[0][:30]
            raise self.error(f"unexpected text {snippet!r} (is this an ASCII FBX 7.x file?)")
        self.pos = match.end()
        kind = match.lastgroup or "end"
        return kind, match.group(kind), match.start(kind) if kind != "end" else match.end()

    def peek(self) -> tuple[str, Any, int]:
        saved = self.pos
        token = self.next()
        self.pos = saved
        return token

    def parse_document(self) -> FbxNode:
        if self.text.startswith("Kaydara FBX Binary"):
            raise FbxParseError(self.source, "this is a binary FBX; export it as ASCII FBX 7.x (FBX SDK 'FBX ascii')")
        root = FbxNode("", [], [], 1)
        while True:
            kind, value, start = self.next()
            if kind == "end":
                return root
            if kind != "key":
                raise self.error(f"expected a node name followed by ':', found {value!r}", start)
            root.children.append(self.parse_node(value, start))

    def parse_node(self, name: str, start: int) -> FbxNode:
        node = FbxNode(name, [], [], self.line_at(start))
        kind, value, pos = self.peek()
        if kind == "count":  # numeric array: *N { a: v,v,v }
            self.next()
            node.props.append(self.parse_array(int(value), name))
            return node
        if kind == "punct" and value == ",":  # 'Content: ,' then the value on the next line
            self.next()
        while True:
            kind, value, pos = self.peek()
            if kind in ("str", "num", "word"):
                self.next()
                node.props.append(_number(value) if kind == "num" else value)
                kind, value, pos = self.peek()
                if kind == "punct" and value == ",":
                    self.next()
                    continue
            break
        if kind == "punct" and value == "{":
            self.next()
            while True:
                kind, value, pos = self.next()
                if kind == "punct" and value == "}":
                    break
                if kind == "key":
                    node.children.append(self.parse_node(value, pos))
                    continue
                if kind == "end":
                    raise FbxParseError(
                        self.source, f"node {name!r} opened here is never closed with '}}' (truncated file?)", node.line
                    )
                raise self.error(f"expected a child node or '}}' inside {name!r}, found {value!r}", pos)
        return node

    def parse_array(self, count: int, name: str) -> np.ndarray:
        kind, value, pos = self.next()
        if not (kind == "punct" and value == "{"):
            raise self.error(f"array {name!r} *{count} must be followed by '{{'", pos)
        kind, value, pos = self.next()
        if kind == "punct" and value == "}" and count == 0:
            return np.zeros(0)
        if kind != "key" or value != "a":
            raise self.error(f"array {name!r} must hold 'a: values', found {value!r}", pos)
        end = self.text.find("}", self.pos)
        if end < 0:
            raise self.error(f"array {name!r} is never closed with '}}' (truncated file?)", pos)
        body = self.text[self.pos : end]
        self.pos = end + 1
        try:
            values = np.array(body.split(","), dtype=np.float64) if body.strip() else np.zeros(0)
        except ValueError:
            raise self.error(f"array {name!r} holds something that is not a number", pos) from None
        if values.size != count:
            raise self.error(f"array {name!r} declares *{count} values but holds {values.size}", pos)
        return values


def _number(text: str) -> int | float:
    if "." in text or "e" in text or "E" in text:
        return float(text)
    return int(text)


def parse_fbx_ascii(text: str, source: str = "<string>") -> FbxNode:
    """Parse FBX 7.x ASCII text into a tree; the returned root's children are the top-level sections."""
    return _Scanner(text, source).parse_document()


def read_fbx_ascii(path: str | os.PathLike) -> FbxNode:
    """Read and parse an ASCII FBX file (see :func:`parse_fbx_ascii`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such FBX file")
    raw = path.read_bytes()
    if raw.startswith(b"Kaydara FBX Binary"):
        raise FbxParseError(str(path), "this is a binary FBX; export it as ASCII FBX 7.x (FBX SDK 'FBX ascii')")
    return parse_fbx_ascii(raw.decode("utf-8-sig", errors="replace"), str(path))


# =====================================================================================================
# The head as arrays
# =====================================================================================================
@dataclasses.dataclass
class MorphTarget:
    """A sparse blendshape: ``vertices[indices] += weight * deltas`` (metres, mesh vertex order).

    ``normal_deltas`` (same rows as ``deltas``) lets viewers shade the deformed face correctly.
    """

    indices: np.ndarray  # [K] int32, strictly increasing
    deltas: np.ndarray  # [K, 3] float32
    normal_deltas: np.ndarray | None = None  # [K, 3] float32

    def dense(self, num_vertices: int) -> np.ndarray:
        """The ``[num_vertices, 3]`` position deltas."""
        out = np.zeros((num_vertices, 3), np.float32)
        out[self.indices] = self.deltas
        return out

    def dense_normals(self, num_vertices: int) -> np.ndarray:
        out = np.zeros((num_vertices, 3), np.float32)
        if self.normal_deltas is not None:
            out[self.indices] = self.normal_deltas
        return out


@dataclasses.dataclass
class FaceCapMesh:
    """One mesh of the head, in the head's rest frame (metres, +Y up, the face looking down +Z).

    Vertices are split at UV seams, so ``positions``, ``normals`` and ``uvs`` share one index and
    ``faces`` are triangles into it (counter-clockwise seen from outside). UVs use glTF's convention
    (origin at the image's top-left corner).
    """

    name: str
    positions: np.ndarray  # [V, 3] float32
    normals: np.ndarray  # [V, 3] float32, unit length
    uvs: np.ndarray  # [V, 2] float32
    faces: np.ndarray  # [F, 3] uint32
    morph_targets: dict[str, MorphTarget] = dataclasses.field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.positions.shape[0])

    def deformed(self, weights: dict[str, float]) -> np.ndarray:
        """Vertex positions with the named blendshapes applied (``{"JawOpen": 0.7}``)."""
        out = self.positions.copy()
        for name, weight in weights.items():
            target = self.morph_targets[name]
            out[target.indices] += np.float32(weight) * target.deltas
        return out


@dataclasses.dataclass
class FaceCapHead:
    """The Face Cap head, ready to animate: meshes, blendshapes by channel name, pivots, texture.

    Rotations: the whole head turns about ``head_pivot`` (the base of the skull, where a neck would
    join) and each eye about its entry in ``eye_pivots`` (the eyeball centre), which is where Face Cap
    rotates its ``grp_eyeLeft`` / ``grp_eyeRight`` groups.
    """

    meshes: dict[str, FaceCapMesh]
    eye_pivots: dict[str, np.ndarray]  # mesh name -> [3] float32, metres
    head_pivot: np.ndarray  # [3] float32, metres
    texture: bytes | None = None
    texture_mime: str = "image/png"
    copyright: str = HEAD_COPYRIGHT
    source: str = ""

    @property
    def head(self) -> FaceCapMesh:
        """The mesh that carries the blendshapes."""
        return next(m for m in self.meshes.values() if m.morph_targets)

    @property
    def eye_for_side(self) -> dict[str, str]:
        """ARKit side -> eye mesh: ``{"Left": ..., "Right": ...}``, "Left" being the face's own left.

        Found from the geometry (the eye on the same side as the vertices ``EyeBlinkLeft`` moves), not
        from the mesh names: Face Cap's ``eyeLeft`` sits on the face's *right* (the viewer's left),
        while its ``eyeBlink_L`` closes the face's left eye, as ARKit's ``eyeBlinkLeft`` does.
        """
        blink = self.head.morph_targets["EyeBlinkLeft"]
        moved = np.abs(blink.deltas).max(axis=1) > 0
        left_x = float(self.head.positions[blink.indices[moved], 0].mean())
        names = sorted(self.eye_pivots, key=lambda n: float(self.eye_pivots[n][0]))  # ascending x
        if len(names) != 2:
            raise ValueError(f"expected two eyes, found {names}")
        low, high = names
        return {"Left": high, "Right": low} if left_x > 0 else {"Left": low, "Right": high}

    @property
    def morph_target_names(self) -> list[str]:
        """Blendshape channel names in the order of the head's morph targets."""
        return list(self.head.morph_targets)

    # Convenience views for callers that want plain arrays.
    @property
    def vertices(self) -> np.ndarray:
        return self.head.positions

    @property
    def faces(self) -> np.ndarray:
        return self.head.faces

    @property
    def morph_targets(self) -> dict[str, MorphTarget]:
        return self.head.morph_targets


# --- FBX object graph --------------------------------------------------------------------------------
def _object_name(node: FbxNode) -> str:
    """'Model::head' -> 'head' (the class prefix dropped)."""
    raw = str(node.props[1]) if len(node.props) > 1 else ""
    return raw.split("::", 1)[-1]


def _vector(props: dict[str, list[FbxValue]], name: str, default: float) -> np.ndarray:
    values = props.get(name)
    if not values or len(values) < 3:
        return np.full(3, default, dtype=np.float64)
    return np.asarray([float(v) for v in values[:3]], dtype=np.float64)


def _translation(v: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = v
    return m


def _scaling(v: np.ndarray) -> np.ndarray:
    return np.diag([v[0], v[1], v[2], 1.0])


def _euler_matrix(degrees: np.ndarray, order: int) -> np.ndarray:
    """FBX Euler rotation (``RotationOrder`` 0 = XYZ: rotate about X first, then Y, then Z)."""
    ax, ay, az = np.radians(degrees)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    axes = {"X": rx, "Y": ry, "Z": rz}
    sequence = ("XYZ", "XZY", "YZX", "YXZ", "ZXY", "ZYX")[order if 0 <= order < 6 else 0]
    r = np.eye(3)
    for axis in sequence:  # the first axis applies first, so it multiplies last
        r = axes[axis] @ r
    m = np.eye(4)
    m[:3, :3] = r
    return m


def _local_matrix(props: dict[str, list[FbxValue]]) -> np.ndarray:
    """FBX's node transform: T * Roff * Rp * Rpre * R * Rpost^-1 * Rp^-1 * Soff * Sp * S * Sp^-1."""
    order = int(props.get("RotationOrder", [0])[0]) if props.get("RotationOrder") else 0
    t = _translation(_vector(props, "Lcl Translation", 0.0))
    r_off = _translation(_vector(props, "RotationOffset", 0.0))
    r_piv = _translation(_vector(props, "RotationPivot", 0.0))
    r_pre = _euler_matrix(_vector(props, "PreRotation", 0.0), 0)
    r = _euler_matrix(_vector(props, "Lcl Rotation", 0.0), order)
    r_post = _euler_matrix(_vector(props, "PostRotation", 0.0), 0)
    s_off = _translation(_vector(props, "ScalingOffset", 0.0))
    s_piv = _translation(_vector(props, "ScalingPivot", 0.0))
    s = _scaling(_vector(props, "Lcl Scaling", 1.0))
    return (
        t @ r_off @ r_piv @ r_pre @ r @ np.linalg.inv(r_post) @ np.linalg.inv(r_piv)
        @ s_off @ s_piv @ s @ np.linalg.inv(s_piv)
    )  # fmt: skip


class _FbxScene:
    """Objects by id and the parent/child connections of an FBX tree."""

    def __init__(self, root: FbxNode, source: str):
        self.source = source
        objects = root.child("Objects")
        connections = root.child("Connections")
        if objects is None or connections is None:
            raise FbxParseError(source, "no 'Objects' or 'Connections' section (not an FBX 7.x scene file)")
        self.objects: dict[int, FbxNode] = {int(n.props[0]): n for n in objects.children if n.props}
        self.parents: dict[int, list[int]] = {}
        self.children: dict[int, list[int]] = {}
        for c in connections.children_named("C"):
            if len(c.props) < 3:
                continue
            child, parent = int(c.props[1]), int(c.props[2])
            self.parents.setdefault(child, []).append(parent)
            self.children.setdefault(parent, []).append(child)

    def of_class(self, cls: str, kind: str | None = None) -> list[tuple[int, FbxNode]]:
        return [
            (i, n) for i, n in self.objects.items()
            if n.name == cls and (kind is None or (len(n.props) > 2 and n.props[2] == kind))
        ]  # fmt: skip

    def linked(self, object_id: int, cls: str, upward: bool) -> list[int]:
        ids = (self.parents if upward else self.children).get(object_id, [])
        return [i for i in ids if i in self.objects and self.objects[i].name == cls]

    def model_parent(self, model_id: int) -> int | None:
        parents = self.linked(model_id, "Model", upward=True)
        return parents[0] if parents else None

    def global_matrix(self, model_id: int) -> np.ndarray:
        matrix = np.eye(4)
        seen: set[int] = set()
        current: int | None = model_id
        while current is not None and current not in seen:
            seen.add(current)
            matrix = _local_matrix(self.objects[current].properties70()) @ matrix
            current = self.model_parent(current)
        return matrix


# --- mesh assembly ---------------------------------------------------------------------------------------
def _polygon_vertex_layer(
    geometry: FbxNode,
    layer: str,
    values_key: str,
    index_key: str,
    width: int,
    polygon_vertex_index: np.ndarray,
    control_points: np.ndarray,
    source: str,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-polygon-vertex ``(values [N, width], value index [N])`` of a layer element, or None when absent."""
    element = geometry.child(layer)
    if element is None:
        return None
    values = element.array(values_key).reshape(-1, width)
    mapping = str(element.child("MappingInformationType").props[0]) if element.child("MappingInformationType") else ""
    reference = (
        str(element.child("ReferenceInformationType").props[0]) if element.child("ReferenceInformationType") else ""
    )
    n = polygon_vertex_index.size
    if mapping in ("ByPolygonVertex", "ByPolygonVertices"):
        index = np.arange(n)
    elif mapping in ("ByControlPoint", "ByVertice", "ByVertex"):
        index = control_points
    else:
        raise FbxParseError(
            source, f"{layer} uses MappingInformationType {mapping!r}; only per-vertex mappings are read", element.line
        )
    if reference == "IndexToDirect":
        index = element.array(index_key).astype(np.int64)[index]
    if index.size and (index.min() < 0 or index.max() >= len(values)):
        raise FbxParseError(source, f"{layer} indexes outside its {len(values)} values", element.line)
    return values, index


def _triangulate(polygon_vertex_index: np.ndarray, source: str, line: int) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate FBX polygons (a negative index ``~i`` ends a polygon).

    Returns ``(control point of each polygon vertex [N], triangles as polygon-vertex positions [F, 3])``.
    """
    raw = polygon_vertex_index.astype(np.int64)
    ends = raw < 0
    if raw.size and not ends[-1]:
        raise FbxParseError(source, "PolygonVertexIndex does not end a polygon (last index must be negative)", line)
    control = np.where(ends, ~raw, raw)
    end_positions = np.flatnonzero(ends)
    starts = np.concatenate([[0], end_positions[:-1] + 1])
    sizes = end_positions - starts + 1
    if (sizes < 3).any():
        raise FbxParseError(source, "a polygon with fewer than 3 vertices in PolygonVertexIndex", line)
    # Polygon p of size n gives triangles (s, s+j+1, s+j+2), j = 0..n-3, in file order.
    polygon_of_triangle = np.repeat(np.arange(len(sizes)), sizes - 2)
    first_triangle = np.concatenate([[0], np.cumsum(sizes - 2)[:-1]])
    j = np.arange(len(polygon_of_triangle)) - first_triangle[polygon_of_triangle]
    s = starts[polygon_of_triangle]
    return control, np.stack([s, s + j + 1, s + j + 2], axis=1)


def vertex_normals(positions: np.ndarray, faces: np.ndarray, weld: np.ndarray | None = None) -> np.ndarray:
    """Area-weighted smooth vertex normals; vertices sharing a ``weld`` id (e.g. a UV seam) share a normal."""
    p = positions.astype(np.float64)
    face_normals = np.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]])
    groups = np.arange(len(p)) if weld is None else weld
    size = int(groups.max(initial=-1)) + 1
    corners = groups[faces].reshape(-1)  # each face adds its normal to its three corners
    repeated = np.repeat(face_normals, 3, axis=0)
    accumulated = np.stack([np.bincount(corners, repeated[:, k], minlength=size) for k in range(3)], axis=1)
    normals = accumulated[groups]
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(length > 0, length, 1.0)).astype(np.float32)


def _build_mesh(scene: _FbxScene, model_id: int, geometry_id: int) -> tuple[FaceCapMesh, np.ndarray, np.ndarray]:
    """A world-space mesh from one FBX Geometry, plus (control point of each vertex, world matrix)."""
    source = scene.source
    model, geometry = scene.objects[model_id], scene.objects[geometry_id]
    name = _object_name(model)
    control_points = geometry.array("Vertices").reshape(-1, 3)
    pvi = geometry.array("PolygonVertexIndex")
    if control_points.size == 0 or pvi.size == 0:
        raise FbxParseError(source, f"mesh {name!r} has no Vertices or PolygonVertexIndex", geometry.line)
    corner_cp, triangles = _triangulate(pvi, source, geometry.line)
    if corner_cp.max() >= len(control_points):
        raise FbxParseError(
            source, f"mesh {name!r}: PolygonVertexIndex refers past its {len(control_points)} vertices", geometry.line
        )
    uv_layer = _polygon_vertex_layer(geometry, "LayerElementUV", "UV", "UVIndex", 2, pvi, corner_cp, source)
    if uv_layer is None:
        uv_values, corner_uv = np.zeros((1, 2)), np.zeros(len(corner_cp), np.int64)
    else:
        uv_values, corner_uv = uv_layer
    # One output vertex per distinct (control point, uv) pair: glTF attributes are per vertex.
    keys = corner_cp * (len(uv_values) + 1) + corner_uv
    _, first_corner, corner_vertex = np.unique(keys, return_index=True, return_inverse=True)
    vertex_cp = corner_cp[first_corner]
    vertex_uv = uv_values[corner_uv[first_corner]]

    world = scene.global_matrix(model_id)
    homogeneous = np.c_[control_points, np.ones(len(control_points))]
    world_cp = (homogeneous @ world.T)[:, :3]
    linear = world[:3, :3]
    flip = np.linalg.det(linear) < 0
    faces = corner_vertex[triangles]
    if flip:  # a mirroring transform turns the winding inside out
        faces = faces[:, ::-1]
    positions = world_cp[vertex_cp].astype(np.float32)
    normals = vertex_normals(positions, faces, weld=vertex_cp)
    uvs = np.c_[vertex_uv[:, 0], 1.0 - vertex_uv[:, 1]].astype(np.float32)  # FBX v is up, glTF v is down
    mesh = FaceCapMesh(name, positions, normals, uvs, faces.astype(np.uint32))
    return mesh, vertex_cp, world


def _read_blendshapes(
    scene: _FbxScene,
    geometry_id: int,
    mesh: FaceCapMesh,
    vertex_cp: np.ndarray,
    world: np.ndarray,
    num_control_points: int,
) -> dict[str, MorphTarget]:
    """The mesh's FBX BlendShape -> BlendShapeChannel -> Shape chain as sparse per-vertex deltas, by channel name."""
    source = scene.source
    targets: dict[str, MorphTarget] = {}
    base_normals = mesh.normals.astype(np.float64)
    linear = world[:3, :3]
    for deformer_id in scene.linked(geometry_id, "Deformer", upward=False):
        for channel_id in scene.linked(deformer_id, "Deformer", upward=False):
            channel_node = scene.objects[channel_id]
            for shape_id in scene.linked(channel_id, "Geometry", upward=False):
                shape = scene.objects[shape_id]
                raw_name = _object_name(shape) or _object_name(channel_node).rsplit(".", 1)[-1]
                name = try_canonical_channel_name(raw_name.rsplit(".", 1)[-1])
                if name is None or name not in BLENDSHAPES:
                    raise FbxParseError(
                        source, f"blendshape {raw_name!r} is not one of the 52 ARKit blendshapes", shape.line
                    )
                if name in targets:
                    raise FbxParseError(source, f"blendshape {raw_name!r} appears twice (as {name})", shape.line)
                cp = shape.array("Indexes").astype(np.int64)
                deltas = shape.array("Vertices").reshape(-1, 3)
                if len(cp) != len(deltas):
                    raise FbxParseError(
                        source, f"shape {raw_name!r}: {len(cp)} Indexes but {len(deltas)} Vertices", shape.line
                    )
                if cp.size and (cp.min() < 0 or cp.max() >= num_control_points):
                    raise FbxParseError(
                        source, f"shape {raw_name!r} indexes past the mesh's {num_control_points} vertices", shape.line
                    )
                dense_cp = np.zeros((num_control_points, 3))
                dense_cp[cp] = deltas @ linear.T  # deltas are directions: no translation
                per_vertex = dense_cp[vertex_cp]
                moved = np.flatnonzero(np.abs(per_vertex).max(axis=1) > 0)
                deformed = mesh.positions.astype(np.float64) + per_vertex
                normal_delta = vertex_normals(deformed, mesh.faces, weld=vertex_cp).astype(np.float64) - base_normals
                # Normals change on the moved vertices and their one-ring; keep rows that change visibly.
                shaded = np.flatnonzero(np.abs(normal_delta).max(axis=1) > 1e-3)
                rows = np.union1d(moved, shaded).astype(np.int32)
                if rows.size == 0:  # a placeholder shape (tongueOut moves nothing): keep one zero row
                    rows = np.zeros(1, np.int32)
                targets[name] = MorphTarget(
                    rows, per_vertex[rows].astype(np.float32), normal_delta[rows].astype(np.float32)
                )
    return targets


def _embedded_texture(scene: _FbxScene) -> tuple[bytes | None, str]:
    """The first texture embedded in the FBX (``Video`` ``Content``), with its MIME type."""
    for _, video in scene.of_class("Video"):
        content = video.child("Content")
        if content is None or not content.props:
            continue
        payload = "".join(str(p) for p in content.props if isinstance(p, str))
        try:
            data = base64.b64decode(payload, validate=False)
        except ValueError:
            continue
        if data:
            return data, _image_mime(data)
    return None, "image/png"


def _image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    raise ValueError("texture is neither PNG nor JPEG (the only images glTF core allows)")


def read_facecap_fbx(path: str | os.PathLike, texture: str | os.PathLike | bytes | None = None) -> FaceCapHead:
    """Read the Face Cap generic head FBX into a :class:`FaceCapHead` (metres, +Y up, facing +Z).

    Args:
        path: the ASCII FBX (``FaceCapHeadGeneric.fbx``).
        texture: a PNG/JPEG path or bytes to use as the texture; by default the image embedded in the
            FBX, else ``FaceCapHeadGeneric.png`` next to it.
    """
    path = Path(path)
    scene = _FbxScene(read_fbx_ascii(path), str(path))
    meshes: dict[str, FaceCapMesh] = {}
    blend_meshes = 0
    for geometry_id, geometry in scene.of_class("Geometry", "Mesh"):
        models = scene.linked(geometry_id, "Model", upward=True)
        if not models:
            continue  # an unused geometry
        mesh, vertex_cp, world = _build_mesh(scene, models[0], geometry_id)
        num_cp = geometry.array("Vertices").size // 3
        mesh.morph_targets = _read_blendshapes(scene, geometry_id, mesh, vertex_cp, world, num_cp)
        if mesh.morph_targets:
            blend_meshes += 1
            ordered = [c for c in BLENDSHAPES if c in mesh.morph_targets]
            mesh.morph_targets = {c: mesh.morph_targets[c] for c in ordered}
        if mesh.name in meshes:
            raise FbxParseError(str(path), f"two meshes are called {mesh.name!r}", geometry.line)
        meshes[mesh.name] = mesh
    if blend_meshes != 1:
        raise FbxParseError(str(path), f"expected exactly one mesh with blendshapes, found {blend_meshes}")
    head_mesh = next(m for m in meshes.values() if m.morph_targets)
    missing = [c for c in BLENDSHAPES if c not in head_mesh.morph_targets]
    if missing:
        raise FbxParseError(str(path), f"the head lacks {len(missing)} ARKit blendshapes: {', '.join(missing[:8])}")

    eye_pivots = {}
    for name in EYE_MESHES:
        if name not in meshes:
            raise FbxParseError(str(path), f"no {name!r} mesh (Face Cap heads have eyeLeft and eyeRight)")
        eye_pivots[name] = _eye_pivot(scene, name, meshes[name])
    head_pivot = _neck_pivot(head_mesh.positions)

    if isinstance(texture, (bytes, bytearray)):
        image, mime = bytes(texture), _image_mime(bytes(texture))
    elif texture is not None:
        image = Path(texture).read_bytes()
        mime = _image_mime(image)
    else:
        image, mime = _embedded_texture(scene)
        sibling = path.with_suffix(".png")
        if image is None and sibling.is_file():
            image = sibling.read_bytes()
            mime = _image_mime(image)
    return FaceCapHead(meshes, eye_pivots, head_pivot, image, mime, source=path.name)


def _eye_pivot(scene: _FbxScene, mesh_name: str, mesh: FaceCapMesh) -> np.ndarray:
    """Where the eye turns: the origin of its ``grp_eye*`` parent group (as Face Cap rotates it).

    Falls back to the centre of the eye's bounding box when the group is absent.
    """
    for model_id, model in scene.of_class("Model"):
        if _object_name(model) != mesh_name:
            continue
        parent = scene.model_parent(model_id)
        if parent is not None and _object_name(scene.objects[parent]).lower().startswith("grp_eye"):
            return scene.global_matrix(parent)[:3, 3].astype(np.float32)
    return ((mesh.positions.min(axis=0) + mesh.positions.max(axis=0)) / 2).astype(np.float32)


def _neck_pivot(head_positions: np.ndarray) -> np.ndarray:
    """Head rotations turn about the bottom of the head mesh, centred left-right and front-back.

    The mesh ends at the jaw and skull base with no neck, so this stands in for the top of the spine.
    """
    lo, hi = head_positions.min(axis=0), head_positions.max(axis=0)
    return np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2], dtype=np.float32)


# =====================================================================================================
# The shipped asset
# =====================================================================================================


def head_glb_bytes() -> bytes:
    """The bare head as a GLB (no animation, all morph target weights 0), as shipped in the package.

    three.js and Blender load it directly; morph target names are in ``mesh.extras.targetNames``.
    """
    if not HEAD_GLB_PATH.is_file():
        raise FileNotFoundError(
            f"{HEAD_GLB_PATH}: the shipped Face Cap head is missing; regenerate it with "
            "`python scripts/convert_facecap_head.py` or reinstall express4d-hf"
        )
    return HEAD_GLB_PATH.read_bytes()


def licence_notice() -> str:
    """The text to keep next to any file derived from the head (its MIT licence and provenance)."""
    licence = LICENSE_PATH.read_text(encoding="utf-8") if LICENSE_PATH.is_file() else ""
    return (
        "The 3D file next to this notice contains the Face Cap generic head (with its 52 ARKit blendshapes)\n"
        f"by Niels Jansson (hizzlehoff), converted by express4d-hf. Source: {HEAD_SOURCE_URL}\n"
        "The head is distributed under the MIT License below; keep this notice with any copy.\n\n" + licence
    )
