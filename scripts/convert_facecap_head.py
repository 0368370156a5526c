#!/usr/bin/env python
"""Regenerate the Face Cap head shipped in the package from the original FBX.

    python scripts/convert_facecap_head.py [--fbx ../shared/assets/facecap-generic-head/FaceCapHeadGeneric.fbx]

Writes ``express4d_hf/assets/facecap_head/``:

* ``facecap_head.glb``: the head (meshes, 52 ARKit morph targets as sparse float32 deltas with morph
  normals, eye and head pivots, texture), no animation;
* ``LICENSE`` and ``ATTRIBUTION.md``: copied unchanged from the source folder;
* ``NOTICE.md``: what was derived, how, and the sha256 of the input and output files.

The output is deterministic: running it twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FBX = REPO.parent / "shared" / "assets" / "facecap-generic-head" / "FaceCapHeadGeneric.fbx"
MAX_SHIPPED_BYTES = 4 * 1024 * 1024

# PNG chunks kept: the image itself. Dropped: colour-space metadata (iCCP/cHRM/gAMA/sRGB: glTF textures
# are sRGB by definition, and the Khronos validator flags custom profiles), pHYs, text and times.
_PNG_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS"}


def strip_png_metadata(data: bytes) -> bytes:
    """The PNG with only its pixel-bearing chunks (pixels are untouched, byte for byte)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos : pos + 12 + length]
        if zlib.crc32(chunk[4:-4]) != struct.unpack(">I", chunk[-4:])[0]:
            raise ValueError(f"PNG chunk {kind!r} at byte {pos} has a bad CRC")
        if kind in _PNG_CRITICAL:
            out.append(chunk)
        pos += 12 + length
    return b"".join(out)


def sha256(path_or_bytes: Path | bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fbx", type=Path, default=DEFAULT_FBX, help="the Face Cap generic head ASCII FBX (default: %(default)s)"
    )
    parser.add_argument(
        "--texture", type=Path, default=None, help="texture PNG/JPEG (default: the one embedded in the FBX)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: express4d_hf/assets/facecap_head)"
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from express4d_hf.export.facecap import ASSET_DIR, read_facecap_fbx
    from express4d_hf.core.io import atomic_write_bytes
    from express4d_hf.export.gltf import head_to_glb

    out = args.out or ASSET_DIR
    source_dir = args.fbx.parent
    for name in ("LICENSE", "ATTRIBUTION.md"):
        if not (source_dir / name).is_file():
            parser.error(f"{source_dir / name} is missing: the head may not be copied without its licence notice")

    start = time.perf_counter()
    head = read_facecap_fbx(args.fbx, texture=args.texture)
    parse_s = time.perf_counter() - start
    if head.texture is not None and head.texture_mime == "image/png":
        head.texture = strip_png_metadata(head.texture)
    glb = head_to_glb(head)
    if len(glb) > MAX_SHIPPED_BYTES:
        raise SystemExit(f"the GLB is {len(glb) / 1e6:.2f} MB, over the {MAX_SHIPPED_BYTES / 1e6:.1f} MB budget")

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "facecap_head.glb", glb)
    for name in ("LICENSE", "ATTRIBUTION.md"):
        shutil.copyfile(source_dir / name, out / name)

    head_mesh = head.head
    sparse_rows = sum(len(t.indices) for t in head_mesh.morph_targets.values())
    meshes = "\n".join(
        f"| `{m.name}` | {m.num_vertices:,} | {len(m.faces):,} | {len(m.morph_targets)} |" for m in head.meshes.values()
    )
    notice = f"""# NOTICE: derived Face Cap head

`facecap_head.glb` is derived from the **Face Cap generic head** by Niels Jansson (hizzlehoff),
MIT License, "Copyright (c) 2019 niels jansson" (full text in `LICENSE`, provenance in `ATTRIBUTION.md`,
both copied here unchanged). Keep this notice and `LICENSE` with any copy of the head or of a file
derived from it; `express4d_hf.export.gltf.motion_to_gltf` writes `<name>.LICENSE.txt` next to every GLB.

## Source
- `{args.fbx.name}` sha256 `{sha256(args.fbx)}`
- texture: {"`" + args.texture.name + "`" if args.texture else "the PNG embedded in the FBX (byte-identical to `FaceCapHeadGeneric.png`)"}

## What was done (by `scripts/convert_facecap_head.py`, deterministic)
1. Parsed the ASCII FBX 7.4 with `express4d_hf.export.facecap` (no third-party FBX code).
2. Applied the FBX node transforms (including `grp_scale` 0.01), so positions are in **metres**, +Y up, the
   face looking down +Z (glTF's convention). Nothing else was moved or rescaled.
3. Fan-triangulated the polygons and split vertices at UV seams (one UV per glTF vertex); flipped V for glTF.
4. Replaced the authored normals by area-weighted smooth normals (welded across UV seams; they agree with the
   authored ones to a median cosine of 0.999) so the morph-target normal deltas are consistent with them.
5. Kept the 52 blendshapes as glTF **sparse** morph targets, float32, named by Live Link channel
   (`EyeBlinkLeft`...; Apple's raw names in `mesh.extras.appleNames`), with NORMAL deltas computed from the
   deformed mesh. Nothing is quantised. `TongueOut` is a placeholder in the source (it moves no vertex).
6. Added pivot nodes: `HeadRotation` at the base of the skull, `LeftEyeRotation` / `RightEyeRotation` at the
   origins of the FBX `grp_eye*` groups (the eyeball centres). Note the source's naming: Face Cap's `eyeLeft`
   mesh sits on the face's *right* (the viewer's left), while its `eyeBlink_L` closes the face's left eye as
   ARKit's `eyeBlinkLeft` does, so `LeftEyeRotation` (driven by `LeftEyeYaw`/`LeftEyePitch`) holds `eyeRight`.
7. Texture: the same pixels, with the PNG's ancillary chunks (ICC profile, chromaticities, pHYs) removed.

## Result
| mesh | vertices | triangles | morph targets |
|---|---|---|---|
{meshes}

- {sparse_rows:,} sparse morph rows in all; `facecap_head.glb` is {len(glb):,} bytes,
  sha256 `{sha256(glb)}`.
"""
    (out / "NOTICE.md").write_text(notice, encoding="utf-8")
    print(f"parsed {args.fbx.name} in {parse_s:.2f} s; wrote {out / 'facecap_head.glb'} ({len(glb) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
