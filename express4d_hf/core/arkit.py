"""The 61 ARKit channels of a Live Link Face capture, their groups, names and left/right mirror.

This module imports nothing else from the package: it is the vocabulary every other layer uses.

>>> len(CHANNELS), CHANNELS[0], CHANNELS[15], CHANNELS[16]
(61, 'EyeBlinkLeft', 'JawRight', 'JawLeft')
>>> canonical_channel_name("eyeBlink_L"), canonical_channel_name("mouthSmileRight")
('EyeBlinkLeft', 'MouthSmileRight')
>>> mirror_caption("A person winks the left eye brightly")
'A person winks the right eye brightly'
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

# Live Link Face CSV order (not the ARKit enum order: JawRight comes before JawLeft here).
CHANNELS: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight",
    "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight", "JawForward",
    "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight",
    "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft",
    "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft",
    "NoseSneerRight", "TongueOut", "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw",
    "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
NUM_CHANNELS = len(CHANNELS)
CHANNEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CHANNELS)}

# --- groups -------------------------------------------------------------------------------------
BLENDSHAPES: tuple[str, ...] = CHANNELS[:52]  # the 52 ARKit blendshape coefficients, nominally [0, 1]
HEAD_ROTATION: tuple[str, ...] = ("HeadYaw", "HeadPitch", "HeadRoll")  # radians
LEFT_EYE_ROTATION: tuple[str, ...] = ("LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll")  # radians
RIGHT_EYE_ROTATION: tuple[str, ...] = ("RightEyeYaw", "RightEyePitch", "RightEyeRoll")  # radians
EYE_ROTATION: tuple[str, ...] = LEFT_EYE_ROTATION + RIGHT_EYE_ROTATION
ROTATIONS: tuple[str, ...] = HEAD_ROTATION + EYE_ROTATION

# Face regions of the blendshapes, for plots, masking and per-region analysis.
REGIONS: dict[str, tuple[str, ...]] = {
    "eyes": tuple(c for c in BLENDSHAPES if c.startswith("Eye")),
    "brows": tuple(c for c in BLENDSHAPES if c.startswith("Brow")),
    "jaw": tuple(c for c in BLENDSHAPES if c.startswith("Jaw")),
    "mouth": tuple(c for c in BLENDSHAPES if c.startswith("Mouth")),
    "cheeks": ("CheekPuff", "CheekSquintLeft", "CheekSquintRight"),
    "nose": ("NoseSneerLeft", "NoseSneerRight"),
    "tongue": ("TongueOut",),
    "head": HEAD_ROTATION,
    "eye_rotation": EYE_ROTATION,
}
# The two halves an animator reaches for first when keeping part of a performance (head rotation is in neither).
REGIONS["upper_face"] = (
    REGIONS["brows"] + REGIONS["eyes"] + ("CheekSquintLeft", "CheekSquintRight") + REGIONS["nose"] + EYE_ROTATION
)
REGIONS["lower_face"] = REGIONS["jaw"] + REGIONS["mouth"] + ("CheekPuff",) + REGIONS["tongue"]
#: Regions made of other regions' channels (the rest partition the 61 channels).
COMPOSITE_REGIONS: tuple[str, ...] = ("upper_face", "lower_face")


def indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """Column indices of channel ``names`` (any naming style)."""
    return [CHANNEL_INDEX[canonical_channel_name(n)] for n in names]


# --- names --------------------------------------------------------------------------------------
def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def apple_name(channel: str) -> str:
    """Apple's raw ARKit name of a blendshape (``EyeBlinkLeft`` -> ``eyeBlink_L``).

    Only the 52 blendshapes have Apple names; rotations raise ``KeyError``.
    """
    if channel not in BLENDSHAPES:
        raise KeyError(f"{channel!r} is not an ARKit blendshape (only the 52 blendshapes have Apple names)")
    camel = channel[:1].lower() + channel[1:]
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        # Jaw/Mouth Left/Right are directions, not sides: Apple spells them jawLeft, mouthRight.
        if camel.endswith(side) and camel not in ("jawLeft", "jawRight", "mouthLeft", "mouthRight"):
            return camel[: -len(side)] + suffix
    return camel


def _normalise_key(name: str) -> str:
    """Case- and separator-insensitive key: 'eyeBlink_L', 'EyeBlinkLeft', 'eye_blink_left' agree."""
    key = name.strip().strip('"').strip()
    key = re.sub(r"_L$", "Left", key)
    key = re.sub(r"_R$", "Right", key)
    return re.sub(r"[^a-z0-9]", "", key.lower())


_NAME_LOOKUP: dict[str, str] = {_normalise_key(c): c for c in CHANNELS}
_NAME_LOOKUP.update({_normalise_key(apple_name(c)): c for c in BLENDSHAPES})


def canonical_channel_name(name: str) -> str:
    """Map any spelling of a channel (PascalCase, camelCase, Apple raw) to its ``CHANNELS`` name.

    Raises ``KeyError`` with the unknown name when it is not an ARKit channel.
    """
    try:
        return _NAME_LOOKUP[_normalise_key(name)]
    except KeyError:
        raise KeyError(f"{name!r} is not one of the 61 ARKit/Live Link channels") from None


@lru_cache(maxsize=4096)
def try_canonical_channel_name(name: str) -> str | None:
    """Like :func:`canonical_channel_name` but returns ``None`` for unknown names."""
    return _NAME_LOOKUP.get(_normalise_key(name))


# --- left/right mirror --------------------------------------------------------------------------
def _build_mirror() -> tuple[np.ndarray, np.ndarray]:
    perm = np.arange(NUM_CHANNELS)
    for i, name in enumerate(CHANNELS):
        for a, b in (("Left", "Right"), ("Right", "Left")):
            if name.endswith(a):
                perm[i] = CHANNEL_INDEX[name[: -len(a)] + b]
            if name.startswith(a + "Eye"):  # LeftEyeYaw <-> RightEyeYaw
                perm[i] = CHANNEL_INDEX[b + name[len(a) :]]
    sign = np.ones(NUM_CHANNELS, dtype=np.float32)
    for name in ("HeadYaw", "HeadRoll", "LeftEyeYaw", "LeftEyeRoll", "RightEyeYaw", "RightEyeRoll"):
        sign[CHANNEL_INDEX[name]] = -1.0
    return perm, sign


# values_mirrored[:, i] = values[:, MIRROR_PERMUTATION[i]] * MIRROR_SIGN[i]
MIRROR_PERMUTATION, MIRROR_SIGN = _build_mirror()
SYMMETRIC_CHANNELS: tuple[str, ...] = tuple(
    c for i, c in enumerate(CHANNELS) if MIRROR_PERMUTATION[i] == i and MIRROR_SIGN[i] > 0
)


def mirror_values(values: np.ndarray) -> np.ndarray:
    """Left/right mirror of a ``[..., 61]`` array (swap sides, negate yaw and roll)."""
    return values[..., MIRROR_PERMUTATION] * MIRROR_SIGN.astype(values.dtype, copy=False)


_SIDE_WORD = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SIDE_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def mirror_caption(caption: str) -> str:
    """Swap 'left' and 'right' as whole words, keeping case ('bright' and 'leftover' are untouched)."""
    return _SIDE_WORD.sub(lambda m: _SIDE_SWAP[m.group(0)], caption)
