"""A procedural stand-in for the Express4D release: captioned ARKit facial motion, made up from rules.

**This is not real capture data.** The real Express4D corpus (1205 Live Link Face takes by 18
performers) is gated; this module writes a folder in exactly its layout so that every part of the
project (reader, HF dataset, training, evaluation, Space) can be built, tested and demonstrated
without it. Numbers measured on this corpus say nothing about the real benchmark.

How a clip is made:

* A :class:`CaptionSpec` is 1-3 groups played one after the other ("... and then ..."); a group is
  one :class:`Event` or two at once ("... while ..."). An event is one of :data:`PRIMITIVES`
  (36 named expressions, 29 kinds of which 7 come in a left and a right version) with modifiers for intensity
  ("slightly", "broadly"), speed ("quickly", "slowly"), hold ("briefly", "for a few seconds") and
  repetition ("twice").
* Each primitive moves a fixed, coupled set of ARKit channels, as a face does: a smile also squints
  the cheeks and eyes, surprise raises the brows, widens the eyes and drops the jaw, a wink closes
  one eye and lifts that cheek, a gaze shift turns the eye rotations *and* the ``EyeLook*``
  coefficients derived from them, a nod/shake/tilt moves head pitch/yaw/roll (and the eyes
  counter-rotate a little, as the vestibulo-ocular reflex does).
* Envelopes rise and fall smoothly (raised-cosine onset, hold with a slight wobble, slower offset).
* Background behaviour is always on: spontaneous blinks every 2-6 s (suppressed while the eyelids
  are acting), small gaze saccades, slow head sway, a performer-specific resting face and sensor
  noise. Blendshapes stay in ``[0, 1.05]`` (real captures overshoot 1 a little), head rotations in
  about ``+-0.3`` rad, eye rotations in about ``+-0.4`` rad.
* A :class:`PerformerStyle` (amplitude, per-region and per-channel gains, left/right asymmetry,
  tempo, latency, blink rate, resting face) makes one instruction look different per performer.

Conventions (ARKit's right-handed face frame: x towards the subject's left, y up, z out of the
face): positive yaw turns head or eyes towards the **subject's left**, positive pitch looks
**down**, positive ``HeadRoll`` tilts the head towards the **subject's right** shoulder. "Left" in a
caption always means the subject's left, i.e. the ARKit ``...Left`` channels, so
:meth:`FaceMotion.mirror` of a clip matches :func:`~express4d_hf.arkit.mirror_caption` of its caption.

>>> import numpy as np
>>> spec = CaptionSpec.single("wink_left")
>>> motion = synthesize_motion(spec, PerformerStyle.sample(np.random.default_rng(0)), np.random.default_rng(1))
>>> motion.caption.startswith("A person is"), motion.fps, 2.0 <= motion.duration <= 10.0
(True, 60.0, True)
>>> bool(motion.channel("EyeBlinkLeft").max() > 3 * motion.channel("EyeBlinkRight").max())
True
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.arkit import CHANNEL_INDEX, CHANNELS, NUM_CHANNELS
from ..core.constants import CAPTURE_FPS
from ..core.motion import FaceMotion, format_timecode
from ..core.io import atomic_folder, atomic_write_text
from ..livelink import write_livelink_csv

__all__ = [
    "BASE_PRIMITIVES",
    "PRIMITIVES",
    "PRIMITIVE_LIBRARY",
    "SYNTHETIC_MARKER",
    "CaptionSpec",
    "Event",
    "PerformerStyle",
    "Primitive",
    "SyntheticClip",
    "caption_paraphrases",
    "generate_clip",
    "known_caption_words",
    "pos_tag",
    "render_caption",
    "sample_caption_spec",
    "synthesize_motion",
    "synthesize_release",
    "take_name",
]

MIN_DURATION_S = 2.0
MAX_DURATION_S = 10.0
BLENDSHAPE_CEILING = 1.05  # real captures overshoot 1 slightly; we saturate softly up to here
HEAD_LIMIT_RAD = 0.3
EYE_LIMIT_RAD = 0.4
SYNTHETIC_MARKER = "EXPRESS4D PROCEDURAL STAND-IN"  # first line of README.txt; identifies our folders

INTENSITY_SCALE = {"low": 0.5, "normal": 0.8, "high": 1.05}
INTENSITIES = tuple(INTENSITY_SCALE)
SPEEDS = ("quick", "normal", "slow")
HOLDS = ("brief", "normal", "long")

_NB = 52  # blendshapes are columns [0, 52); rotations follow
_HEAD = {n: CHANNEL_INDEX[n] for n in ("HeadYaw", "HeadPitch", "HeadRoll")}


# =============================================================================================
# Primitive library
# =============================================================================================
@dataclasses.dataclass(frozen=True)
class Primitive:
    """One expression primitive: which channels it moves, how, and how captions name it.

    Attributes:
        name: unique name, e.g. ``"wink_left"``; ``base`` is the side-free kind (``"wink"``).
        side: ``"left"``, ``"right"`` or ``None``; always the subject's side.
        kind: envelope shape: ``"hold"`` (rise, hold, fall), ``"pulse"`` (blink-like, fast),
            ``"oscillate"`` (nod/shake cycles) or ``"sweep"`` (eye roll arc).
        weights: ``[61]`` peak contribution at intensity 1 (rotations in radians).
        gaze: ``(yaw, pitch)`` of the gaze in radians at intensity 1.
        regions: face regions it drives; two primitives can only play at once when disjoint.
        phrases: caption templates (gerund phrases after "A person is"); ``{side}`` is the side
            word and ``{i}`` (optional) where an intensity adverb goes (appended otherwise).
        plain_phrases: templates used only at normal intensity (they do not take an adverb).
        high_phrases: templates that themselves say "high intensity" (e.g. "grinning").
        low_words, high_words: intensity adverbs; empty means the primitive has no intensity.
        repeatable: whether "twice"/"three times" make sense.
        rise_scale: onset-speed factor (gaze shifts are faster than expressions).
    """

    name: str
    base: str
    side: str | None
    kind: str
    weights: np.ndarray
    gaze: tuple[float, float]
    regions: frozenset[str]
    phrases: tuple[str, ...]
    plain_phrases: tuple[str, ...] = ()
    high_phrases: tuple[str, ...] = ()
    low_words: tuple[str, ...] = ()
    high_words: tuple[str, ...] = ()
    repeatable: bool = True
    rise_scale: float = 1.0

    @property
    def has_intensity(self) -> bool:
        return bool(self.low_words)

    @property
    def holdable(self) -> bool:
        return self.kind == "hold"


_REGION_OF_PREFIX = (
    ("EyeBlink", "lids"), ("EyeSquint", "lids"), ("EyeWide", "lids"), ("EyeLook", "gaze"),
    ("Brow", "brows"), ("Jaw", "jaw"), ("Mouth", "mouth"), ("Cheek", "cheeks"), ("Nose", "nose"),
    ("Tongue", "tongue"), ("Head", "head"),
)  # fmt: skip


def _weights(spec: dict[str, float], side: str | None) -> np.ndarray:
    """Channel weights from ``{"MouthSmile*": 0.8, "EyeBlink{S}": 1, "Mouth{O}": 0.1, "HeadYaw": 0.2}``.

    ``*`` expands to both Left and Right, ``{S}`` to the primitive's side and ``{O}`` to the other.
    """
    same = {"left": "Left", "right": "Right", None: ""}[side]
    other = {"left": "Right", "right": "Left", None: ""}[side]
    w = np.zeros(NUM_CHANNELS, dtype=np.float64)
    for key, value in spec.items():
        names = [key.replace("*", "Left"), key.replace("*", "Right")] if "*" in key else [key]
        for name in names:
            w[CHANNEL_INDEX[name.replace("{S}", same).replace("{O}", other)]] += value
    return w


def _regions(weights: np.ndarray, gaze: tuple[float, float]) -> frozenset[str]:
    regions = set()
    for i, name in enumerate(CHANNELS):
        if abs(weights[i]) >= (0.05 if name.startswith("Head") else 0.2):
            regions.update(region for prefix, region in _REGION_OF_PREFIX if name.startswith(prefix))
    if any(abs(g) > 0 for g in gaze):
        regions.add("gaze")
    return frozenset(regions)


_SIDED_SIGN = {"left": 1.0, "right": -1.0}  # yaw towards the subject's left is positive


def _define_primitives() -> dict[str, Primitive]:
    """The table of primitives. Weights are peak values at intensity 1 (ARKit coefficients / radians)."""
    slight = ("slightly", "softly", "gently")
    table: list[dict[str, Any]] = [
        # ---- eyelids ------------------------------------------------------------------------
        {"base": "blink", "kind": "pulse", "intensity": False,
         "w": {"EyeBlink*": 1.0, "EyeSquint*": 0.12, "CheekSquint*": 0.05},
         "phrases": ("blinking", "blinking their eyes")},
        {"base": "close_eyes", "kind": "hold", "repeatable": False,
         "w": {"EyeBlink*": 0.95, "EyeSquint*": 0.3, "CheekSquint*": 0.12, "BrowDown*": 0.12},
         "phrases": ("closing their eyes", "shutting their eyes"),
         "plain": ("keeping their eyes closed",), "low": ("gently", "softly"), "high": ("tightly", "firmly")},
        {"base": "wink", "kind": "pulse", "sided": True, "intensity": False,
         "w": {"EyeBlink{S}": 1.0, "EyeSquint{S}": 0.45, "CheekSquint{S}": 0.45, "MouthSmile{S}": 0.3,
            "BrowDown{S}": 0.2, "Mouth{S}": 0.1, "EyeBlink{O}": 0.1, "EyeSquint{O}": 0.1},
         "phrases": ("winking their {side} eye", "winking with their {side} eye", "giving a wink with the {side} eye")},
        {"base": "squint", "kind": "hold",
         "w": {"EyeSquint*": 0.85, "EyeBlink*": 0.3, "CheekSquint*": 0.35, "BrowDown*": 0.3, "NoseSneer*": 0.1},
         "phrases": ("squinting", "squinting their eyes", "narrowing their eyes"),
         "low": ("slightly", "a bit"), "high": ("hard", "tightly", "strongly")},
        {"base": "widen_eyes", "kind": "hold",
         "w": {"EyeWide*": 0.9, "BrowInnerUp": 0.35, "BrowOuterUp*": 0.3, "EyeBlink*": -0.1, "EyeSquint*": -0.1},
         "phrases": ("widening their eyes",), "plain": ("opening their eyes wide", "making their eyes big"),
         "high_phrases": ("opening their eyes very wide",), "low": ("slightly", "a bit"), "high": ("fully", "a lot")},
        # ---- gaze ---------------------------------------------------------------------------
        {"base": "look", "kind": "hold", "sided": True, "gaze": (0.32, 0.0), "rise": 0.35,
         "w": {"HeadYaw": 0.03},
         "phrases": ("looking{i} to the {side}", "glancing{i} to the {side}", "shifting their gaze{i} to the {side}",
                  "looking over{i} to the {side}"),
         "low": ("slightly",), "high": ("far",)},
        {"base": "look_up", "kind": "hold", "gaze": (0.0, -0.28), "rise": 0.35,
         "w": {"EyeWide*": 0.15, "BrowInnerUp": 0.15, "BrowOuterUp*": 0.1, "HeadPitch": -0.03},
         "phrases": ("looking{i} up", "glancing{i} up", "looking{i} upward", "raising their gaze"),
         "low": ("slightly",), "high": ("all the way",)},
        {"base": "look_down", "kind": "hold", "gaze": (0.0, 0.3), "rise": 0.35,
         "w": {"EyeBlink*": 0.3, "EyeSquint*": 0.08, "HeadPitch": 0.04},
         "phrases": ("looking{i} down", "glancing{i} down", "looking{i} downward", "lowering their gaze"),
         "low": ("slightly",), "high": ("all the way",)},
        {"base": "roll_eyes", "kind": "sweep", "gaze": (0.26, -0.3), "repeatable": False, "intensity": False,
         "w": {"BrowInnerUp": 0.2, "BrowOuterUp*": 0.1, "EyeWide*": 0.1, "HeadPitch": -0.03},
         "phrases": ("rolling their eyes", "giving an eye roll")},
        # ---- brows --------------------------------------------------------------------------
        {"base": "raise_brows", "kind": "hold",
         "w": {"BrowInnerUp": 0.85, "BrowOuterUp*": 0.8, "EyeWide*": 0.25, "EyeBlink*": -0.05},
         "phrases": ("raising their eyebrows", "lifting their eyebrows", "raising both eyebrows", "raising their brows"),
         "low": ("slightly", "a bit"), "high": ("high", "all the way")},
        {"base": "furrow_brows", "kind": "hold",
         "w": {"BrowDown*": 0.85, "EyeSquint*": 0.3, "NoseSneer*": 0.15, "EyeBlink*": 0.08, "CheekSquint*": 0.1},
         "phrases": ("furrowing their brows", "furrowing their eyebrows", "knitting their brows",
                  "lowering their eyebrows", "drawing their brows together"),
         "low": ("slightly",), "high": ("deeply", "hard")},
        {"base": "raise_brow", "kind": "hold", "sided": True,
         "w": {"BrowOuterUp{S}": 0.85, "BrowInnerUp": 0.3, "EyeWide{S}": 0.3, "BrowDown{O}": 0.25, "EyeSquint{O}": 0.15},
         "phrases": ("raising their {side} eyebrow", "lifting their {side} eyebrow", "arching their {side} eyebrow",
                  "raising the {side} eyebrow"),
         "low": ("slightly",), "high": ("high",)},
        # ---- mouth --------------------------------------------------------------------------
        {"base": "smile", "kind": "hold",
         "w": {"MouthSmile*": 0.85, "CheekSquint*": 0.5, "EyeSquint*": 0.35, "MouthDimple*": 0.25,
            "MouthUpperUp*": 0.15, "MouthStretch*": 0.1, "JawOpen": 0.05},
         "phrases": ("smiling",), "plain": ("giving a smile", "breaking into a smile", "putting on a smile"),
         "high_phrases": ("grinning", "beaming", "smiling from ear to ear"),
         "low": ("softly", "slightly", "gently", "faintly"), "high": ("broadly", "widely", "brightly")},
        {"base": "smirk", "kind": "hold", "sided": True,
         "w": {"MouthSmile{S}": 0.75, "Mouth{S}": 0.3, "CheekSquint{S}": 0.35, "MouthDimple{S}": 0.25,
            "EyeSquint{S}": 0.2, "MouthSmile{O}": 0.05, "MouthPress{O}": 0.1},
         "phrases": ("smirking on the {side} side", "smirking with the {side} corner of their mouth",
                  "raising the {side} corner of their mouth", "pulling up the {side} corner of their mouth"),
         "low": slight, "high": ("strongly",)},
        {"base": "frown", "kind": "hold",
         "w": {"MouthFrown*": 0.8, "MouthShrugLower": 0.35, "MouthStretch*": 0.2, "BrowDown*": 0.35,
            "BrowInnerUp": 0.2, "MouthPress*": 0.15, "MouthLowerDown*": 0.1},
         "phrases": ("frowning", "pulling down the corners of their mouth", "turning the corners of their mouth down"),
         "plain": ("making a frown",),
         "low": ("slightly", "a bit"), "high": ("deeply", "strongly")},
        {"base": "open_mouth", "kind": "hold",
         "w": {"JawOpen": 0.75, "MouthLowerDown*": 0.35, "MouthUpperUp*": 0.1, "MouthFunnel": 0.15, "MouthClose": -0.05},
         "phrases": ("opening their mouth", "dropping their jaw"), "plain": ("letting their mouth fall open",),
         "low": ("slightly", "a bit"), "high": ("wide", "all the way")},
        {"base": "pucker", "kind": "hold",
         "w": {"MouthPucker": 0.85, "MouthFunnel": 0.35, "MouthRollLower": 0.1, "MouthClose": 0.15, "JawForward": 0.1},
         "phrases": ("puckering their lips", "puckering up"), "plain": ("making a kissing face",),
         "low": slight, "high": ("tightly", "strongly")},
        {"base": "pout", "kind": "hold",
         "w": {"MouthShrugLower": 0.7, "MouthShrugUpper": 0.35, "MouthPucker": 0.35, "MouthFrown*": 0.3,
            "BrowInnerUp": 0.25, "JawForward": 0.15},
         "phrases": ("pouting", "pushing out their lower lip", "sticking out their bottom lip"),
         "low": ("slightly", "a bit"), "high": ("strongly",)},
        {"base": "press_lips", "kind": "hold",
         "w": {"MouthPress*": 0.75, "MouthRollLower": 0.3, "MouthRollUpper": 0.2, "MouthClose": 0.2,
            "MouthShrugLower": 0.2, "MouthStretch*": 0.1},
         "phrases": ("pressing their lips together", "tightening their lips", "compressing their lips"),
         "low": ("slightly", "gently"), "high": ("hard", "firmly")},
        {"base": "sneer", "kind": "hold",
         "w": {"NoseSneer*": 0.8, "MouthUpperUp*": 0.55, "BrowDown*": 0.35, "CheekSquint*": 0.3,
            "EyeSquint*": 0.2, "MouthFrown*": 0.1},
         "phrases": ("sneering", "wrinkling their nose", "scrunching up their nose", "curling their upper lip"),
         "low": ("slightly", "a bit"), "high": ("strongly",)},
        {"base": "grimace", "kind": "hold",
         "w": {"MouthStretch*": 0.75, "MouthLowerDown*": 0.35, "MouthUpperUp*": 0.3, "EyeSquint*": 0.35,
            "BrowDown*": 0.3, "JawOpen": 0.1, "MouthFrown*": 0.15, "NoseSneer*": 0.15},
         "phrases": ("grimacing", "baring their teeth"), "plain": ("stretching their lips into a grimace",),
         "low": ("slightly",), "high": ("strongly", "intensely")},
        {"base": "tongue_out", "kind": "hold",
         "w": {"TongueOut": 0.9, "JawOpen": 0.35, "MouthLowerDown*": 0.3, "MouthFunnel": 0.15, "MouthPucker": 0.05},
         "phrases": ("sticking their tongue out", "sticking out their tongue", "showing their tongue",
                  "poking their tongue out"),
         "low": ("slightly", "a bit"), "high": ("all the way", "far")},
        {"base": "puff_cheeks", "kind": "hold",
         "w": {"CheekPuff": 0.85, "MouthClose": 0.25, "MouthPucker": 0.2, "MouthRollUpper": 0.05, "EyeWide*": 0.05},
         "phrases": ("puffing their cheeks", "puffing out their cheeks", "blowing up their cheeks"),
         "plain": ("filling their cheeks with air",), "low": ("slightly", "a bit"), "high": ("fully", "strongly")},
        {"base": "jaw_shift", "kind": "hold", "sided": True,
         "w": {"Jaw{S}": 0.65, "Mouth{S}": 0.35, "JawOpen": 0.08},
         "phrases": ("moving their jaw{i} to the {side}", "shifting their jaw{i} to the {side}",
                  "sliding their jaw{i} to the {side}"),
         "low": ("slightly",), "high": ("far",)},
        # ---- whole face ---------------------------------------------------------------------
        {"base": "surprise", "kind": "hold", "repeatable": False,
         "w": {"EyeWide*": 0.85, "BrowInnerUp": 0.75, "BrowOuterUp*": 0.65, "JawOpen": 0.45, "MouthFunnel": 0.2,
            "MouthLowerDown*": 0.2, "EyeBlink*": -0.1, "HeadPitch": -0.04},
         "phrases": ("looking{i} surprised", "acting{i} surprised"), "plain": ("making a surprised face", "showing surprise"),
         "low": ("slightly", "a bit"), "high": ("very", "really")},
        # ---- head ---------------------------------------------------------------------------
        {"base": "nod", "kind": "oscillate", "w": {"HeadPitch": 0.17},
         "phrases": ("nodding", "nodding their head"), "plain": ("nodding yes",),
         "low": ("slightly", "gently"), "high": ("deeply", "vigorously", "firmly")},
        {"base": "shake_head", "kind": "oscillate", "w": {"HeadYaw": 0.2},
         "phrases": ("shaking their head",), "plain": ("shaking their head no",),
         "low": ("slightly", "gently"), "high": ("vigorously", "firmly")},
        {"base": "tilt_head", "kind": "hold", "sided": True, "repeatable": True,
         "w": {"HeadRoll": -0.22, "HeadYaw": 0.03},  # towards the side's shoulder: left -> negative roll
         "phrases": ("tilting their head{i} to the {side}", "leaning their head{i} to the {side}",
                  "tilting their head{i} toward their {side} shoulder", "cocking their head{i} to the {side}"),
         "low": ("slightly",), "high": ("far",)},
        {"base": "turn_head", "kind": "hold", "sided": True,
         "w": {"HeadYaw": 0.26},
         "phrases": ("turning their head{i} to the {side}", "turning{i} to the {side}",
                  "rotating their head{i} to the {side}", "turning their face{i} to the {side}"),
         "low": ("slightly",), "high": ("far",)},
    ]  # fmt: skip

    library: dict[str, Primitive] = {}
    for entry in table:
        sides = ("left", "right") if entry.get("sided") else (None,)
        for side in sides:
            name = entry["base"] if side is None else f"{entry['base']}_{side}"
            weights = _weights(entry["w"], side)
            if side is not None:  # yaw and roll flip with the side (left is the reference in the table)
                for rot in ("HeadYaw", "HeadRoll"):
                    weights[CHANNEL_INDEX[rot]] *= _SIDED_SIGN[side]
            gaze = entry.get("gaze", (0.0, 0.0))
            if side is not None:
                gaze = (gaze[0] * _SIDED_SIGN[side], gaze[1])
            has_intensity = entry.get("intensity", True)
            library[name] = Primitive(
                name=name, base=entry["base"], side=side, kind=entry["kind"], weights=weights, gaze=gaze,
                regions=_regions(weights, gaze), phrases=entry["phrases"], plain_phrases=entry.get("plain", ()),
                high_phrases=entry.get("high_phrases", ()),
                low_words=entry.get("low", ()) if has_intensity else (),
                high_words=entry.get("high", ()) if has_intensity else (),
                repeatable=entry.get("repeatable", True), rise_scale=entry.get("rise", 1.0),
            )  # fmt: skip
    return library


PRIMITIVE_LIBRARY: dict[str, Primitive] = _define_primitives()
PRIMITIVES: tuple[str, ...] = tuple(PRIMITIVE_LIBRARY)
BASE_PRIMITIVES: tuple[str, ...] = tuple(dict.fromkeys(p.base for p in PRIMITIVE_LIBRARY.values()))


# =============================================================================================
# Caption specification
# =============================================================================================
@dataclasses.dataclass(frozen=True)
class Event:
    """One primitive with its modifiers. ``repeats=0`` means "unspecified" (the primitive's default)."""

    primitive: str
    intensity: str = "normal"
    speed: str = "normal"
    hold: str = "normal"
    repeats: int = 0

    def __post_init__(self) -> None:
        if self.primitive not in PRIMITIVE_LIBRARY:
            raise ValueError(f"unknown primitive {self.primitive!r}; choose one of {', '.join(PRIMITIVES)}")
        for field, value, allowed in (("intensity", self.intensity, INTENSITIES), ("speed", self.speed, SPEEDS),
                                      ("hold", self.hold, HOLDS)):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"Event.{field} must be one of {allowed}, got {value!r}")
        if not 0 <= self.repeats <= 3:
            raise ValueError(f"Event.repeats must be 0 (unspecified), 1, 2 or 3, got {self.repeats}")

    @property
    def spec(self) -> Primitive:
        return PRIMITIVE_LIBRARY[self.primitive]


@dataclasses.dataclass(frozen=True)
class CaptionSpec:
    """What a clip performs: groups played in order; the events of a group play at the same time."""

    groups: tuple[tuple[Event, ...], ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.groups) <= 3 or any(not 1 <= len(g) <= 2 for g in self.groups):
            raise ValueError("a CaptionSpec has 1-3 groups of 1-2 simultaneous events")
        for group in self.groups:
            if len(group) == 2 and group[0].spec.regions & group[1].spec.regions:
                raise ValueError(f"{group[0].primitive} and {group[1].primitive} move the same face region; "
                                 "they cannot play at the same time")  # fmt: skip

    @classmethod
    def single(cls, primitive: str, **modifiers: Any) -> CaptionSpec:
        """A one-event spec, e.g. ``CaptionSpec.single("smile", intensity="high")``."""
        return cls(((Event(primitive, **modifiers),),))

    @classmethod
    def sequence(cls, *events: Event | str) -> CaptionSpec:
        """Events played one after the other."""
        return cls(tuple((e if isinstance(e, Event) else Event(e),) for e in events))

    @property
    def events(self) -> list[Event]:
        return [e for g in self.groups for e in g]

    @property
    def primitives(self) -> list[str]:
        return [e.primitive for e in self.events]

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [[dataclasses.asdict(e) for e in g] for g in self.groups]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionSpec:
        return cls(tuple(tuple(Event(**e) for e in g) for g in data["groups"]))


def sample_caption_spec(rng: np.random.Generator) -> CaptionSpec:
    """Draw a random instruction: 1-3 groups, sometimes two events at once, a few modifiers.

    Modifiers are budgeted so captions stay short (at most about 20 words), as in the paper.
    """
    n_groups = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20]))
    budget = {1: 2, 2: 2, 3: 1}[n_groups]
    used_names: set[str] = set()
    groups: list[tuple[Event, ...]] = []
    for _ in range(n_groups):
        first = _sample_primitive(rng, used_names)
        group = [first]
        if n_groups <= 2 and rng.random() < 0.2:
            partner = _sample_primitive(rng, used_names, exclude_regions=first.regions)
            if partner is not None:
                group.append(partner)
        events = []
        for prim in group:
            used_names.add(prim.name)
            event, cost = _sample_modifiers(rng, prim, budget, per_event_cap=2 if n_groups == 1 and len(group) == 1 else 1)
            budget -= cost
            events.append(event)
        groups.append(tuple(events))
    return CaptionSpec(tuple(groups))


def _sample_primitive(rng: np.random.Generator, used: set[str], exclude_regions: frozenset[str] = frozenset()):
    bases = [b for b in BASE_PRIMITIVES
             if any(p.base == b and p.name not in used and not (p.regions & exclude_regions)
                    for p in PRIMITIVE_LIBRARY.values())]  # fmt: skip
    if not bases:
        return None
    base = bases[int(rng.integers(len(bases)))]
    options = [p for p in PRIMITIVE_LIBRARY.values()
               if p.base == base and p.name not in used and not (p.regions & exclude_regions)]  # fmt: skip
    return options[int(rng.integers(len(options)))]


def _sample_modifiers(rng: np.random.Generator, prim: Primitive, budget: int, per_event_cap: int) -> tuple[Event, int]:
    cap = min(budget, per_event_cap)
    mods: dict[str, Any] = {}
    candidates = ["intensity", "speed", "hold", "repeats"]
    rng.shuffle(candidates)
    for kind in candidates:
        if len(mods) >= cap:
            break
        if kind == "intensity" and prim.has_intensity and rng.random() < 0.45:
            mods["intensity"] = "low" if rng.random() < 0.5 else "high"
        elif kind == "speed" and rng.random() < 0.25:
            mods["speed"] = "quick" if rng.random() < 0.5 else "slow"
        elif kind == "hold" and prim.holdable and rng.random() < 0.2:
            mods["hold"] = "brief" if rng.random() < 0.6 else "long"
        elif kind == "repeats" and prim.repeatable and prim.kind != "sweep" and rng.random() < 0.15:
            mods["repeats"] = 2 if rng.random() < 0.75 else 3
    if mods.get("repeats") and mods.get("hold") == "long":
        del mods["hold"]
    return Event(prim.name, **mods), len(mods)


# =============================================================================================
# Captions
# =============================================================================================
_SPEED_WORDS = {"quick": ("quickly", "rapidly"), "slow": ("slowly", "gradually")}
_HOLD_WORDS = {"brief": ("briefly", "for a moment"), "long": ("for a few seconds", "for a long moment")}
MAX_CAPTION_WORDS = 22  # the official loaders crop captions to 20 tokens; stay close to that
_REPEAT_WORDS = {2: ("twice", "two times"), 3: ("three times",)}


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _event_phrase(event: Event, rng: np.random.Generator) -> str:
    prim = event.spec
    adverb = ""
    if event.intensity == "high" and prim.high_phrases and rng.random() < 0.35:
        template = _choice(rng, prim.high_phrases)
    elif event.intensity == "normal":
        template = _choice(rng, prim.phrases + prim.plain_phrases)
    else:
        template = _choice(rng, prim.phrases)
        adverb = _choice(rng, prim.low_words if event.intensity == "low" else prim.high_words)
    if "{i}" in template:
        text = template.replace("{i}", f" {adverb}" if adverb else "")
    else:
        text = f"{template} {adverb}" if adverb else template
    text = text.replace("{side}", prim.side or "")
    if event.speed != "normal":
        words = _SPEED_WORDS[event.speed] if prim.kind == "hold" else _SPEED_WORDS[event.speed][:1]
        word = _choice(rng, words)
        text = f"{word} {text}" if (adverb or rng.random() < 0.6) else f"{text} {word}"
    if event.repeats >= 2:
        text = f"{text} {_choice(rng, _REPEAT_WORDS[event.repeats])}"
    if event.hold != "normal":
        text = f"{text} {_choice(rng, _HOLD_WORDS[event.hold])}"
    return text


def render_caption(spec: CaptionSpec, rng: np.random.Generator, max_words: int = MAX_CAPTION_WORDS) -> str:
    """One English instruction for ``spec`` in the paper's style, e.g.
    "A person is squinting briefly and then opening their eyes wide".

    Wordings longer than ``max_words`` are redrawn (up to 8 tries; the shortest wins).
    """
    best = ""
    for _ in range(8):
        caption = _render_once(spec, rng)
        if len(caption.split()) <= max_words:
            return caption
        if not best or len(caption.split()) < len(best.split()):
            best = caption
    return best


def _render_once(spec: CaptionSpec, rng: np.random.Generator) -> str:
    parts = []
    for group in spec.groups:
        phrases = [_event_phrase(e, rng) for e in group]
        if len(phrases) == 1:
            parts.append(phrases[0])
        else:
            joiner = _choice(rng, (" while ", " while ", " while also "))
            parts.append(phrases[0] + joiner + phrases[1])
    if len(parts) == 1:
        body = parts[0]
    elif len(parts) == 2:
        body = parts[0] + _choice(rng, (" and then ", ", then ", " and then ", " before ")) + parts[1]
    else:
        first, second = _choice(rng, ((", then ", ", and then "), (", ", ", and then "), (", then ", ", and finally ")))
        body = parts[0] + first + parts[1] + second + parts[2]
    return "A person is " + body


def caption_paraphrases(spec: CaptionSpec, rng: np.random.Generator, count: int, first: str | None = None) -> list[str]:
    """Up to ``count`` different captions of ``spec`` (``first`` leads the list when given)."""
    captions = [first] if first else []
    for _ in range(count * 6):
        if len(captions) >= count:
            break
        caption = render_caption(spec, rng)
        if caption not in captions:
            captions.append(caption)
    return captions


# ---- rule-based POS tagging (the official texts/ format: "caption#word/POS word/POS ...") -----
_VERB_LEMMAS = {
    "blinking": "blink", "closing": "close", "shutting": "shut", "keeping": "keep", "winking": "wink",
    "giving": "give", "squinting": "squint", "narrowing": "narrow", "widening": "widen", "opening": "open",
    "making": "make", "looking": "look", "glancing": "glance", "shifting": "shift", "raising": "raise",
    "lowering": "lower", "rolling": "roll", "lifting": "lift", "furrowing": "furrow", "knitting": "knit",
    "drawing": "draw", "arching": "arch", "smiling": "smile", "breaking": "break", "putting": "put",
    "grinning": "grin", "beaming": "beam", "smirking": "smirk", "pulling": "pull", "frowning": "frown",
    "turning": "turn", "dropping": "drop", "letting": "let", "fall": "fall", "puckering": "pucker",
    "pouting": "pout", "pushing": "push", "sticking": "stick", "pressing": "press", "tightening": "tighten",
    "compressing": "compress", "sneering": "sneer", "wrinkling": "wrinkle", "scrunching": "scrunch",
    "curling": "curl", "grimacing": "grimace", "baring": "bare", "stretching": "stretch", "showing": "show",
    "poking": "poke", "puffing": "puff", "blowing": "blow", "filling": "fill", "moving": "move",
    "sliding": "slide", "nodding": "nod", "shaking": "shake", "tilting": "tilt", "leaning": "lean",
    "cocking": "cock", "rotating": "rotate", "acting": "act", "kissing": "kiss",
}  # fmt: skip
_NOUN_LEMMAS = {
    "person": "person", "eye": "eye", "eyes": "eye", "eyebrow": "eyebrow", "eyebrows": "eyebrow",
    "brows": "brow", "head": "head", "mouth": "mouth", "lip": "lip", "lips": "lip", "cheeks": "cheek",
    "tongue": "tongue", "jaw": "jaw", "nose": "nose", "smile": "smile", "wink": "wink", "face": "face",
    "side": "side", "corner": "corner", "corners": "corner", "teeth": "tooth", "shoulder": "shoulder",
    "gaze": "gaze", "frown": "frown", "grimace": "grimace", "surprise": "surprise", "air": "air",
    "roll": "roll", "seconds": "second", "moment": "moment", "times": "time", "time": "time",
    "while": "while", "way": "way", "bit": "bit", "ear": "ear", "lot": "lot",
}  # fmt: skip
_OTHER_POS = {
    "a": "DET", "an": "DET", "the": "DET", "both": "DET", "all": "DET", "is": "AUX", "their": "PRON",
    "and": "CCONJ", "then": "ADV", "finally": "ADV", "also": "ADV", "before": "ADP", "to": "ADP",
    "with": "ADP", "of": "ADP", "on": "ADP", "from": "ADP", "long": "ADJ", "really": "ADV", "into": "ADP", "toward": "ADP", "for": "ADP", "over": "ADP", "up": "ADP",
    "out": "ADP", "down": "ADP", "together": "ADV", "upward": "ADV", "downward": "ADV", "open": "ADJ",
    "closed": "ADJ", "no": "INTJ", "yes": "INTJ", "few": "ADJ", "twice": "ADV", "two": "NUM", "three": "NUM",
    "left": "ADJ", "right": "ADJ", "wide": "ADV", "big": "ADJ", "surprised": "ADJ", "upper": "ADJ",
    "lower": "ADJ", "bottom": "ADJ", "far": "ADV", "high": "ADV", "very": "ADV", "hard": "ADV",
    "fully": "ADV", "slightly": "ADV", "softly": "ADV", "gently": "ADV", "faintly": "ADV", "broadly": "ADV",
    "widely": "ADV", "brightly": "ADV", "deeply": "ADV", "vigorously": "ADV", "firmly": "ADV",
    "strongly": "ADV", "intensely": "ADV", "tightly": "ADV", "quickly": "ADV", "rapidly": "ADV",
    "slowly": "ADV", "gradually": "ADV", "briefly": "ADV",
}  # fmt: skip


def pos_tag(caption: str) -> str:
    """Tokens of ``caption`` in the HumanML3D/Express4D style: lowercase ``word/POS``, nouns and verbs
    lemmatised (except "left"), punctuation dropped. Rule-based over the corpus vocabulary.

    >>> pos_tag("A person is winking their left eye twice, then smiling")
    'a/DET person/NOUN is/AUX wink/VERB their/PRON left/ADJ eye/NOUN twice/ADV then/ADV smile/VERB'
    """
    words = [w for w in caption.replace("-", "").lower().replace(",", " ").split() if w.isalpha()]
    tokens = []
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        if word in ("left", "right") and prev == "the" and (i + 1 == len(words) or words[i + 1] in _OTHER_POS):
            tokens.append(f"{word}/NOUN")  # "to the left": a noun, kept unlemmatised as in the official tokenizer
        elif word == "while" and prev in ("a", "few"):
            tokens.append("while/NOUN")
        elif word == "while":
            tokens.append("while/SCONJ")
        elif word in ("lower", "open") and prev in ("their", "the"):
            tokens.append(f"{word}/ADJ")
        elif word in _VERB_LEMMAS:
            tokens.append(f"{_VERB_LEMMAS[word]}/VERB")
        elif word in _NOUN_LEMMAS:
            tokens.append(f"{_NOUN_LEMMAS[word]}/NOUN")
        elif word in _OTHER_POS:
            tokens.append(f"{word}/{_OTHER_POS[word]}")
        elif word.endswith("ing"):
            tokens.append(f"{word[:-3]}/VERB")
        elif word.endswith("ly"):
            tokens.append(f"{word}/ADV")
        else:
            tokens.append(f"{word}/NOUN")
    return " ".join(tokens)


def known_caption_words() -> set[str]:
    """Every word the POS tagger knows (tests check generated captions use only these)."""
    return set(_VERB_LEMMAS) | set(_NOUN_LEMMAS) | set(_OTHER_POS)


# =============================================================================================
# Performers
# =============================================================================================
# A typical resting face in Live Link captures: lids a little lowered, gaze a little down (the phone
# sits below the eyes), lips lightly closed.
_REST_FACE = _weights({
    "EyeBlink*": 0.1, "EyeSquint*": 0.08, "EyeLookDown*": 0.0, "BrowDown*": 0.04, "CheekSquint*": 0.04,
    "JawOpen": 0.03, "MouthClose": 0.03, "MouthRollLower": 0.05, "MouthRollUpper": 0.03,
    "MouthShrugUpper": 0.05, "MouthShrugLower": 0.04, "MouthPress*": 0.04, "MouthFrown*": 0.02,
    "MouthDimple*": 0.03, "MouthStretch*": 0.03, "MouthLowerDown*": 0.02, "MouthUpperUp*": 0.02,
}, None)  # fmt: skip
_LEFT = np.array([n.endswith("Left") or n.startswith("LeftEye") for n in CHANNELS])
_RIGHT = np.array([n.endswith("Right") or n.startswith("RightEye") for n in CHANNELS])
_REGION_NAMES = ("lids", "gaze", "brows", "jaw", "mouth", "cheeks", "nose", "tongue", "head")


def _channel_region(name: str) -> str:
    return next((region for prefix, region in _REGION_OF_PREFIX if name.startswith(prefix)), "gaze")


_CHANNEL_REGION = np.array([_REGION_NAMES.index(_channel_region(n)) for n in CHANNELS])


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare performer_id instead
class PerformerStyle:
    """How one (imaginary) performer acts: amplitude, asymmetry, timing and resting face.

    ``channel_gain`` folds the overall gain, per-region gains, per-channel coupling differences and the
    left/right asymmetry (``asymmetry > 0``: the left side moves more) into one ``[61]`` vector.
    """

    performer_id: int
    channel_gain: np.ndarray
    rest: np.ndarray  # [61] resting offsets of the blendshapes (rotations are in rest_pose/rest_gaze)
    rest_pose: tuple[float, float, float]  # head yaw, pitch, roll (rad)
    rest_gaze: tuple[float, float]  # gaze yaw, pitch (rad)
    asymmetry: float
    tempo: float  # >1: slower onsets
    hold_factor: float
    latency_s: float
    blink_interval_s: tuple[float, float]
    blink_depth: float
    vergence: float
    vor_gain: float
    sway_rad: float
    noise: float

    @classmethod
    def sample(cls, rng: np.random.Generator, performer_id: int = 0) -> PerformerStyle:
        """A random but plausible performer."""
        gain = rng.uniform(0.82, 1.15)
        region_gain = np.exp(rng.normal(0.0, 0.1, len(_REGION_NAMES)))
        asym = rng.uniform(-0.12, 0.12)
        channel = gain * region_gain[_CHANNEL_REGION] * np.exp(rng.normal(0.0, 0.12, NUM_CHANNELS))
        channel = channel * np.where(_LEFT, 1.0 + asym, np.where(_RIGHT, 1.0 - asym, 1.0))
        rest = _REST_FACE * np.exp(rng.normal(0.0, 0.35, NUM_CHANNELS)) + np.abs(rng.normal(0, 0.01, NUM_CHANNELS))
        rest[_NB:] = 0.0
        lo = rng.uniform(2.0, 3.5)
        return cls(
            performer_id=int(performer_id), channel_gain=channel, rest=rest,
            rest_pose=(rng.normal(0, 0.04), rng.normal(0.04, 0.05), rng.normal(0, 0.03)),
            rest_gaze=(rng.normal(0, 0.03), rng.uniform(0.04, 0.12)), asymmetry=float(asym),
            tempo=rng.uniform(0.8, 1.25), hold_factor=rng.uniform(0.8, 1.3), latency_s=rng.uniform(0.25, 0.8),
            blink_interval_s=(lo, rng.uniform(lo + 1.5, 6.0)), blink_depth=rng.uniform(0.8, 1.0),
            vergence=rng.uniform(0.01, 0.04), vor_gain=rng.uniform(0.2, 0.5), sway_rad=rng.uniform(0.006, 0.02),
            noise=rng.uniform(0.003, 0.008),
        )  # fmt: skip

    @classmethod
    def neutral(cls, performer_id: int = 0) -> PerformerStyle:
        """A symmetric, average performer (useful for docs and tests)."""
        return cls(performer_id, np.ones(NUM_CHANNELS), _REST_FACE.copy(), (0.0, 0.04, 0.0), (0.0, 0.08), 0.0,
                   1.0, 1.0, 0.5, (2.0, 6.0), 0.9, 0.025, 0.35, 0.012, 0.005)  # fmt: skip


# =============================================================================================
# Motion synthesis
# =============================================================================================
def _ramp(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def _bump(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0: raised-cosine rise, flat hold, raised-cosine fall."""
    return _ramp((t - start) / max(rise, 1e-3)) - _ramp((t - start - rise - hold) / max(fall, 1e-3))


_RISE_S = {"quick": (0.1, 0.18), "normal": (0.25, 0.42), "slow": (0.7, 1.05)}
_HOLD_S = {"brief": (0.2, 0.4), "normal": (0.6, 1.3), "long": (1.8, 2.6)}
_PERIOD_S = {"quick": (0.36, 0.46), "normal": (0.55, 0.75), "slow": (0.95, 1.2)}
_SPEED_TIME = {"quick": 0.75, "normal": 1.0, "slow": 1.7}


@dataclasses.dataclass
class _Timing:
    """When and how long an event plays (seconds relative to its own start)."""

    event: Event
    segments: list[tuple[float, float, float, float]]  # (start, rise, hold, fall) per repetition/pulse
    period: float = 0.0
    cycles: int = 0
    sign: float = 1.0
    wobble: tuple[float, float] = (0.0, 0.0)
    amp: float = 1.0
    offset: float = 0.0

    @property
    def duration(self) -> float:
        if self.cycles:
            return self.cycles * self.period
        return max(s + r + h + f for s, r, h, f in self.segments)

    def scaled(self, factor: float) -> None:
        self.segments = [tuple(v * factor for v in seg) for seg in self.segments]  # type: ignore[misc]
        self.period *= factor


def _plan_event(event: Event, style: PerformerStyle, rng: np.random.Generator) -> _Timing:
    prim = event.spec
    amp = INTENSITY_SCALE[event.intensity] * rng.uniform(0.9, 1.1)
    timing = _Timing(event, [], amp=amp, wobble=(rng.uniform(0.6, 1.6), rng.uniform(0, 2 * np.pi)))
    if prim.kind == "oscillate":
        timing.period = rng.uniform(*_PERIOD_S[event.speed]) * style.tempo
        timing.cycles = event.repeats or int(rng.integers(2, 4))
        timing.sign = 1.0 if rng.random() < 0.5 else -1.0
        return timing
    if prim.kind == "pulse":
        is_blink = prim.base == "blink"
        count = event.repeats or (int(rng.integers(2, 5)) if is_blink else 1)
        speed = _SPEED_TIME[event.speed] * style.tempo
        t = 0.0
        for _ in range(count):
            close = rng.uniform(0.07, 0.11) * speed
            hold = (rng.uniform(0.03, 0.08) if is_blink else rng.uniform(0.15, 0.35)) * speed
            reopen = rng.uniform(0.12, 0.2) * speed
            timing.segments.append((t, close, hold, reopen))
            t += close + hold + reopen + (rng.uniform(0.12, 0.3) if is_blink else rng.uniform(0.3, 0.5)) * speed
        return timing
    if prim.kind == "sweep":
        duration = rng.uniform(0.9, 1.3) * _SPEED_TIME[event.speed] * style.tempo
        timing.segments.append((0.0, 0.25 * duration, 0.3 * duration, 0.45 * duration))
        timing.sign = 1.0 if rng.random() < 0.5 else -1.0
        return timing
    count = max(event.repeats, 1)
    t = 0.0
    for _ in range(count):
        rise = rng.uniform(*_RISE_S[event.speed]) * style.tempo * prim.rise_scale
        hold = rng.uniform(*_HOLD_S[event.hold]) * style.hold_factor * (0.5 if count > 1 else 1.0)
        fall = rise * rng.uniform(1.1, 1.6) / max(prim.rise_scale, 0.5)
        timing.segments.append((t, rise, hold, fall))
        t += rise + hold + fall + rng.uniform(0.15, 0.3)
    return timing


def _layout(spec: CaptionSpec, style: PerformerStyle, rng: np.random.Generator) -> tuple[list[_Timing], float]:
    """Place every event on the clip's time line; return the timings and the clip length (s)."""
    groups: list[list[_Timing]] = []
    for group in spec.groups:
        timings = [_plan_event(e, style, rng) for e in group]
        for k, timing in enumerate(timings[1:], start=1):
            timing.offset = rng.uniform(0.0, 0.3)
            if timing.event.spec.kind == "hold" and timings[0].event.spec.kind == "hold":  # "X while Y": overlap
                target = timings[0].duration - timing.offset
                current = timing.duration
                if current > 0 and target > current:
                    last = timing.segments[-1]
                    timing.segments[-1] = (last[0], last[1], last[2] + (target - current), last[3])
        groups.append(timings)
    lead = style.latency_s * rng.uniform(0.7, 1.3)
    tail = rng.uniform(0.4, 1.1)
    gaps = [rng.uniform(0.2, 0.6) for _ in range(len(groups) - 1)]
    group_lengths = [max(t.offset + t.duration for t in g) for g in groups]
    body = sum(group_lengths) + sum(gaps)
    room = MAX_DURATION_S - 0.25 - lead - tail
    if body > room:  # too long for the 10 s limit: everyone performs a little faster
        factor = room / body
        for g in groups:
            for t in g:
                t.scaled(factor)
                t.offset *= factor
        gaps = [gap * factor for gap in gaps]
        group_lengths = [length * factor for length in group_lengths]
    cursor = lead
    for g, length, gap in zip(groups, group_lengths, gaps + [0.0]):
        for t in g:
            t.offset += cursor
        cursor += length + gap
    total = max(cursor + tail, MIN_DURATION_S + rng.uniform(0.05, 0.5))
    return [t for g in groups for t in g], min(total, MAX_DURATION_S)


def _render_event(timing: _Timing, t: np.ndarray, style: PerformerStyle, face: np.ndarray, gaze: np.ndarray) -> None:
    """Add one event's contribution to ``face [T, 61]`` and ``gaze [T, 2]`` (in place)."""
    prim = timing.event.spec
    weights = prim.weights * style.channel_gain * timing.amp
    local = t - timing.offset
    if prim.kind == "oscillate":
        span = timing.cycles * timing.period
        window = _bump(local, 0.0, 0.2 * timing.period, max(span - 0.4 * timing.period, 0.0), 0.2 * timing.period)
        phase = 2.0 * np.pi * np.clip(local, 0.0, span) / timing.period
        if prim.base == "nod":  # down and back up each cycle, with a little rebound above neutral
            signal = (0.5 - 0.5 * np.cos(phase)) - 0.12 * np.sin(phase) * window
        else:
            signal = timing.sign * np.sin(phase) * window
        face += signal[:, None] * weights[None, :]
        return
    envelope = np.zeros_like(t)
    for start, rise, hold, fall in timing.segments:
        envelope += _bump(local, start, rise, hold, fall)
    if prim.kind == "hold":  # a held expression is never perfectly still
        frequency, phase = timing.wobble
        envelope *= 1.0 + 0.04 * np.sin(2 * np.pi * frequency * local + phase)
    face += envelope[:, None] * weights[None, :]
    if prim.kind == "sweep":
        _, rise, hold, fall = timing.segments[0]
        progress = np.clip(local / (rise + hold + fall), 0.0, 1.0)
        gaze[:, 0] += timing.sign * prim.gaze[0] * timing.amp * np.cos(np.pi * progress) * envelope
        gaze[:, 1] += prim.gaze[1] * timing.amp * envelope
    elif prim.gaze != (0.0, 0.0):
        gaze += envelope[:, None] * (np.asarray(prim.gaze) * timing.amp)[None, :]


def _background_blinks(t: np.ndarray, style: PerformerStyle, busy: list[tuple[float, float]], rng) -> np.ndarray:
    """Spontaneous blinks every 2-6 s (performer-dependent), skipped while the eyelids are acting."""
    envelope = np.zeros_like(t)
    when = rng.uniform(0.3, style.blink_interval_s[1])
    while when < t[-1]:
        if not any(a - 0.3 <= when <= b + 0.3 for a, b in busy):
            close, hold, reopen = rng.uniform(0.07, 0.1), rng.uniform(0.02, 0.06), rng.uniform(0.12, 0.18)
            envelope += rng.uniform(0.85, 1.0) * _bump(t, when, close, hold, reopen)
        when += rng.uniform(*style.blink_interval_s)
    return envelope


def _saccades(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small gaze shifts (about 2-4 degrees) every 0.8-3 s, each taking ~40 ms."""
    gaze = np.zeros((len(t), 2))
    when = rng.uniform(0.2, 1.5)
    target = np.zeros(2)
    while when < t[-1]:
        new = rng.normal(0.0, [0.04, 0.025])
        gaze += _ramp((t - when) / 0.04)[:, None] * (new - target)[None, :]
        target = new
        when += rng.uniform(0.8, 3.0)
    return gaze


def _sway(t: np.ndarray, amplitude: float, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """Slow quasi-periodic drift: a sum of a few low-frequency sinusoids."""
    freqs = rng.uniform(0.08, 0.45, n)
    phases = rng.uniform(0, 2 * np.pi, n)
    amps = rng.uniform(0.4, 1.0, n)
    return amplitude * (np.sin(2 * np.pi * freqs[None, :] * t[:, None] + phases[None, :]) * amps).sum(1) / amps.sum()


def _soft_ceiling(values: np.ndarray, knee: float = 0.95, ceiling: float = BLENDSHAPE_CEILING) -> np.ndarray:
    """Identity below ``knee``, then a smooth approach to ``ceiling`` (real captures overshoot 1 a little)."""
    over = values > knee
    if over.any():
        width = ceiling - knee
        values = values.copy()
        values[over] = knee + width * np.tanh((values[over] - knee) / width)
    return values


def synthesize_motion(
    caption_spec: CaptionSpec | str,
    performer_style: PerformerStyle | None = None,
    rng: np.random.Generator | int | None = None,
    fps: float = CAPTURE_FPS,
    caption: str | None = None,
) -> FaceMotion:
    """Perform ``caption_spec`` (a :class:`CaptionSpec` or a primitive name) as ``performer_style`` would.

    Returns a clean 60 fps :class:`FaceMotion` (every frame valid) whose ``caption`` is ``caption`` or
    a freshly rendered one, and whose ``metadata`` records the primitives and when each event plays
    (``metadata["events"]``: primitive, start and end in seconds, modifiers).
    """
    spec = CaptionSpec.single(caption_spec) if isinstance(caption_spec, str) else caption_spec
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    style = performer_style or PerformerStyle.neutral()
    timings, total = _layout(spec, style, rng)
    num_frames = round(total * fps)
    t = np.arange(num_frames) / fps

    face = np.zeros((num_frames, NUM_CHANNELS))
    gaze = np.zeros((num_frames, 2))
    for timing in timings:
        _render_event(timing, t, style, face, gaze)

    # Background behaviour.
    eyelid_busy = [(tm.offset, tm.offset + tm.duration) for tm in timings if "lids" in tm.event.spec.regions]
    blinks = _background_blinks(t, style, eyelid_busy, rng) * style.blink_depth
    for side in ("Left", "Right"):
        face[:, CHANNEL_INDEX[f"EyeBlink{side}"]] += blinks * rng.uniform(0.95, 1.05)
        face[:, CHANNEL_INDEX[f"EyeSquint{side}"]] += 0.1 * blinks
    gaze += _saccades(t, rng) + np.asarray(style.rest_gaze)[None, :]
    head = face[:, [_HEAD["HeadYaw"], _HEAD["HeadPitch"], _HEAD["HeadRoll"]]]
    head += np.asarray(style.rest_pose)[None, :] + rng.normal(0, 0.01, 3)[None, :]
    head += np.stack([_sway(t, style.sway_rad, rng) for _ in range(3)], axis=1) * np.array([1.0, 0.8, 0.6])
    head = HEAD_LIMIT_RAD * np.tanh(head / HEAD_LIMIT_RAD)
    face[:, _NB + 3 :] = 0.0
    face[:, _NB : _NB + 3] = head

    # Eyes: the vestibulo-ocular reflex counters head motion; each eye gets its own rotation and the
    # EyeLook coefficients follow from those rotations (so the two always agree).
    gaze[:, 0] -= style.vor_gain * (head[:, 0] - style.rest_pose[0])
    gaze[:, 1] -= style.vor_gain * (head[:, 1] - style.rest_pose[1])
    left_yaw = EYE_LIMIT_RAD * np.tanh((gaze[:, 0] - style.vergence) / EYE_LIMIT_RAD)
    right_yaw = EYE_LIMIT_RAD * np.tanh((gaze[:, 0] + style.vergence) / EYE_LIMIT_RAD)
    pitch = EYE_LIMIT_RAD * np.tanh(gaze[:, 1] / EYE_LIMIT_RAD)
    torsion = -0.1 * (head[:, 2] - style.rest_pose[2])
    eye_rot = np.stack([left_yaw, pitch, torsion, right_yaw, pitch + rng.normal(0, 0.003), torsion], axis=1)
    face[:, _NB + 3 :] = eye_rot
    look = {
        "EyeLookOutLeft": np.maximum(left_yaw, 0) / 0.42, "EyeLookInLeft": np.maximum(-left_yaw, 0) / 0.42,
        "EyeLookInRight": np.maximum(right_yaw, 0) / 0.42, "EyeLookOutRight": np.maximum(-right_yaw, 0) / 0.42,
        "EyeLookDownLeft": np.maximum(pitch, 0) / 0.38, "EyeLookDownRight": np.maximum(pitch, 0) / 0.38,
        "EyeLookUpLeft": np.maximum(-pitch, 0) / 0.38, "EyeLookUpRight": np.maximum(-pitch, 0) / 0.38,
    }  # fmt: skip
    for name, curve in look.items():
        face[:, CHANNEL_INDEX[name]] += curve * style.channel_gain[CHANNEL_INDEX[name]]

    # Resting face, a little breathing in the jaw, sensor noise (lightly smoothed, as ARKit output is).
    face[:, :_NB] += (style.rest * np.exp(rng.normal(0, 0.1, NUM_CHANNELS)))[None, :_NB]
    face[:, CHANNEL_INDEX["JawOpen"]] += _sway(t, 0.01, rng, n=2)
    noise = rng.normal(0.0, 1.0, face.shape)
    noise[:, :_NB] *= style.noise
    noise[:, _NB:] *= 0.0025
    noise[1:] = 0.55 * noise[1:] + 0.45 * noise[:-1]
    face += noise
    face[:, :_NB] = _soft_ceiling(np.maximum(face[:, :_NB], 0.0))

    # Real timecodes: a time of day during a recording session.
    start_frame = int(rng.integers(9 * 3600, 19 * 3600)) * round(fps) + int(rng.integers(round(fps)))
    events = [{
        "primitive": tm.event.primitive, "start": round(tm.offset, 3), "end": round(tm.offset + tm.duration, 3),
        "intensity": tm.event.intensity, "speed": tm.event.speed, "hold": tm.event.hold, "repeats": tm.event.repeats,
    } for tm in timings]  # fmt: skip
    return FaceMotion(
        face.astype(np.float32), fps=fps, start_timecode=format_timecode(0, round(fps), start_frame),
        caption=caption if caption is not None else render_caption(spec, rng),
        metadata={"synthetic": True, "performer": style.performer_id, "primitives": spec.primitives,
                  "spec": spec.to_dict(), "events": events},
    )  # fmt: skip


@dataclasses.dataclass
class SyntheticClip:
    """A generated take: the motion, its caption lines (the first is the prompt) and what it performs."""

    motion: FaceMotion
    captions: list[str]
    spec: CaptionSpec


def generate_clip(
    rng: np.random.Generator,
    performer: PerformerStyle,
    spec: CaptionSpec | None = None,
    prompt: str | None = None,
    num_paraphrases: int | None = None,
) -> SyntheticClip:
    """One take: draw a spec (unless given), word it (``prompt`` leads when given), perform it."""
    spec = spec or sample_caption_spec(rng)
    count = num_paraphrases or int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    captions = caption_paraphrases(spec, rng, count, first=prompt or render_caption(spec, rng))
    motion = synthesize_motion(spec, performer, rng, caption=captions[0])
    return SyntheticClip(motion, captions, spec)


# =============================================================================================
# The release folder
# =============================================================================================
def take_name(k: int) -> str:
    """Name of take ``k`` (1-based) in the official layout: ``MySlate_<k>_iPhone_cal``."""
    return f"MySlate_{k}_iPhone_cal"


_README = f"""{SYNTHETIC_MARKER}

This folder is a PROCEDURAL STAND-IN for the Express4D release, made by express4d_hf.data.synthetic.
It is NOT real capture data: no person was recorded. Every clip was generated by rules (expression
primitives with ARKit channel coupling, performer styles, blinks, gaze shifts, head sway and noise).
Use it to build, test and demonstrate the pipeline; numbers measured on it say nothing about the
real Express4D benchmark (Aloni et al., arXiv 2508.12438), which you must request from its authors.

Layout (the same as the official release):
  data/MySlate_<k>_iPhone_cal.csv   Live Link Face CSV, 60 fps, 61 ARKit channels, k = 1..{{n}}
  texts/MySlate_<k>_iPhone_cal.txt  one or more lines "caption#word/POS word/POS ..." (first = prompt)
  train.txt, test.txt               take names, one per line (seeded {{train_pct}}/{{test_pct}} split)
  texts_plain.txt                   line k = the prompt of take k
  performers.json                   take name -> performer id (0..{{last_performer}})

Settings: {{n}} clips, {{participants}} performers, seed {{seed}}.
Conventions: positive yaw turns towards the subject's left, positive pitch looks down, positive
HeadRoll tilts towards the subject's right shoulder; "left" in a caption is the subject's left.
"""


def _plan_release(num_clips: int, participants: int, seed: int):
    """Who performs each take and what (some prompts are performed again by another performer)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    weights = rng.dirichlet(np.full(participants, 6.0))
    performers = rng.choice(participants, size=num_clips, p=weights)
    if num_clips >= participants:  # everyone performs at least once
        performers[rng.permutation(num_clips)[:participants]] = np.arange(participants)
    specs: list[CaptionSpec] = []
    prompts: list[str] = []
    for k in range(num_clips):
        if k >= 8 and rng.random() < 0.2:
            source = int(rng.integers(k))
            if performers[source] != performers[k]:
                specs.append(specs[source])
                prompts.append(prompts[source])
                continue
        spec = sample_caption_spec(rng)
        specs.append(spec)
        prompts.append(render_caption(spec, rng))
    return [int(p) for p in performers], specs, prompts


def _split(num_clips: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    n_test = round(num_clips * test_fraction)
    if 0 < test_fraction < 1 and num_clips >= 2:
        n_test = min(max(n_test, 1), num_clips - 1)
    test = set(rng.permutation(num_clips)[:n_test].tolist())
    return [k for k in range(num_clips) if k not in test], sorted(test)


_WORKER_STATE: dict[str, Any] = {}


def _write_take(k: int) -> tuple[int, str, float]:
    """Generate take ``k`` (0-based) and write its CSV and text file; runs in a worker or inline."""
    state = _WORKER_STATE
    rng = np.random.default_rng(np.random.SeedSequence(state["seed"], spawn_key=(0, k)))
    style = state["styles"][state["performers"][k]]
    clip = generate_clip(rng, style, spec=state["specs"][k], prompt=state["prompts"][k])
    name = take_name(k + 1)
    root: Path = state["root"]
    write_livelink_csv(clip.motion, root / "data" / f"{name}.csv", fps=None)
    lines = "".join(f"{c}#{pos_tag(c)}\n" for c in clip.captions)
    with open(root / "texts" / f"{name}.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write(lines)
    return k, clip.captions[0], clip.motion.duration


def synthesize_release(
    out_dir: str | os.PathLike,
    num_clips: int = 1205,
    participants: int = 18,
    seed: int = 0,
    progress: bool = True,
    test_fraction: float = 0.2,
    *,
    workers: int | None = None,
) -> Path:
    """Write a procedural Express4D stand-in to ``out_dir`` in the official release layout.

    The folder is built next to ``out_dir`` and renamed into place at the end, so a crash never
    leaves a half-written release. An existing ``out_dir`` is replaced only when it is empty or an
    earlier procedural stand-in (its README.txt starts with :data:`SYNTHETIC_MARKER`); anything else
    raises :class:`FileExistsError`. The same ``seed`` gives byte-identical files, whatever ``workers``.

    Args:
        out_dir: destination folder (e.g. ``data/Express4D``).
        num_clips: number of takes (1205 in the real release).
        participants: number of performers (18 in the real release).
        seed: seed of every random choice.
        progress: show a tqdm progress bar.
        test_fraction: share of takes listed in ``test.txt`` (the rest go to ``train.txt``).
        workers: processes writing takes (default: up to 2, the CSV formatting is the bottleneck).

    Returns:
        The path of the finished folder.
    """
    out = Path(out_dir)
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    if participants < 1:
        raise ValueError(f"participants must be at least 1, got {participants}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    _check_replaceable(out)
    try:
        with atomic_folder(out) as tmp:
            _write_release(tmp, num_clips, participants, seed, test_fraction, progress, workers)
    finally:
        _WORKER_STATE.clear()
    return out


def _write_release(tmp: Path, num_clips: int, participants: int, seed: int, test_fraction: float, progress: bool,
                   workers: int | None) -> None:  # fmt: skip
    """Write the takes, texts, splits and README of a release into the (temporary) folder ``tmp``."""
    (tmp / "data").mkdir()
    (tmp / "texts").mkdir()
    performers, specs, prompts = _plan_release(num_clips, participants, seed)
    styles = [PerformerStyle.sample(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, p))), p)
              for p in range(participants)]  # fmt: skip
    _WORKER_STATE.update(seed=seed, styles=styles, performers=performers, specs=specs, prompts=prompts, root=tmp)
    final_prompts = [""] * num_clips
    for k, prompt, _ in _run_takes(num_clips, progress, workers):
        final_prompts[k] = prompt
    _WORKER_STATE.clear()

    names = [take_name(k + 1) for k in range(num_clips)]
    train, test = _split(num_clips, test_fraction, seed)
    atomic_write_text(tmp / "train.txt", "".join(f"{names[k]}\n" for k in train))
    atomic_write_text(tmp / "test.txt", "".join(f"{names[k]}\n" for k in test))
    atomic_write_text(tmp / "texts_plain.txt", "".join(f"{p}\n" for p in final_prompts))
    atomic_write_text(tmp / "performers.json", json.dumps(dict(zip(names, performers)), indent=1) + "\n")
    readme = _README.format(
        n=num_clips, participants=participants, seed=seed, last_performer=participants - 1,
        train_pct=round(100 * (1 - test_fraction)), test_pct=round(100 * test_fraction),
    )  # fmt: skip
    atomic_write_text(tmp / "README.txt", readme)


def _run_takes(num_clips: int, progress: bool, workers: int | None) -> Iterable[tuple[int, str, float]]:
    from tqdm.auto import tqdm

    if workers is None:
        workers = min(2, os.cpu_count() or 1) if num_clips >= 64 else 1
    bar = tqdm(total=num_clips, desc="synthesising takes", unit="take", disable=not progress)
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # fork shares the plan with the workers without pickling it; each take has its own seed,
            # so the files do not depend on which worker wrote them.
            from .workers import die_with_parent

            with multiprocessing.get_context("fork").Pool(workers, die_with_parent, (os.getpid(),)) as pool:
                for result in pool.imap_unordered(_write_take, range(num_clips), chunksize=8):
                    bar.update(1)
                    yield result
        else:
            for k in range(num_clips):
                result = _write_take(k)
                bar.update(1)
                yield result
    finally:
        bar.close()


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output path")
    if not any(out.iterdir()):
        return
    readme = out / "README.txt"
    if readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(SYNTHETIC_MARKER):
        return
    raise FileExistsError(
        f"{out} already holds files that are not a procedural Express4D stand-in (no README.txt starting "
        f"with {SYNTHETIC_MARKER!r}); refusing to replace them. Choose an empty or new folder."
    )


