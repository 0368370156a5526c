"""Export motions for viewers: an animated glTF (GLB) of the Face Cap generic head.

The head (MIT, (c) 2019 Niels Jansson) ships inside the package as a compact GLB
(``express4d_hf/assets/facecap_head/``, with its LICENSE, ATTRIBUTION.md and NOTICE.md); exporting a
:class:`~express4d_hf.livelink.FaceMotion` adds one animation to it and writes the licence notice next to
the file. ``motion_to_gltf(motion, path)`` does it in one call.
"""

from .facecap import (
    FaceCapHead,
    FaceCapMesh,
    FbxParseError,
    MorphTarget,
    head_glb_bytes,
    licence_notice,
    read_facecap_fbx,
)
from .gltf import (
    GltfFormatError,
    glb_animation_values,
    head_to_glb,
    load_head,
    motion_to_glb_bytes,
    motion_to_gltf,
    read_glb,
)

__all__ = [
    "FaceCapHead",
    "FaceCapMesh",
    "FbxParseError",
    "GltfFormatError",
    "MorphTarget",
    "glb_animation_values",
    "head_glb_bytes",
    "head_to_glb",
    "licence_notice",
    "load_head",
    "motion_to_glb_bytes",
    "motion_to_gltf",
    "read_facecap_fbx",
    "read_glb",
]
