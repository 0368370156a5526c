"""Does a model (and does the evaluator) notice the ORDER of a multi-step instruction?

Two instruments:

* **Order-swapped control** (:func:`swap_steps`, :func:`evaluate_order_swapped`): real test motions scored
  against their own captions with the steps swapped, beside the Real row on the same subset. An evaluator that
  reads the order ranks "X and then Y" above "Y and then X" for a clip that does X first; if it does not, no
  benchmark number can reward a model for following the order.

  How a caption is split into steps: the subject ("A person is ", "The person ") is kept in front; the rest is
  cut at the sequence connectors ``", and then "``, ``", then "``, ``", and finally "``, ``", after that "``,
  ``" and then "``, ``" then "``, ``" before "``, ``" followed by "`` and at the commas of a list of steps
  (``"X, Y, and then Z"``). Simultaneous parts (``"X while Y"``) stay inside one step. A caption with two or
  more steps gets its steps in reverse order with every connector left where it was ("A person is X and then
  Y" -> "A person is Y and then X"; three steps X, Y, Z -> Z, Y, X). Captions with a single step are left out
  of both rows (the subset is :func:`multi_step_subset`).

* **Order probe** (:data:`ORDER_PROBES`, :func:`order_probe`): two-step instructions written for this test
  (not drawn from the corpus's templates), each naming the ARKit channels its two steps move. A probe passes
  when, averaged over 4 generated samples, the first step's channels are at least 0.03 higher (mean raw ARKit
  value) in the first half of the clip than in the second, and the second step's channels at least 0.03
  higher in the second half than in the first. Order accuracy is the share of probes that pass, with a
  percentile bootstrap 95 % interval over the probes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.arkit import CHANNEL_INDEX
from ..core.constants import TRAIN_FPS
from ..core.motion import FaceMotion

__all__ = [
    "ORDER_PROBES",
    "ORDER_PROBE_FRAMES",
    "ORDER_PROBE_MARGIN",
    "ORDER_PROBE_SAMPLES",
    "OrderProbe",
    "OrderProbeResult",
    "bootstrap_interval",
    "evaluate_order_swapped",
    "multi_step_subset",
    "order_probe",
    "probe_passes",
    "reference_generator",
    "split_steps",
    "swap_steps",
]

# --- splitting and swapping steps ---------------------------------------------------------------------------
_SUBJECT = re.compile(r"^\s*((?:a|the)\s+(?:person|man|woman|subject|performer|actor)\s+(?:is\s+)?)", re.I)
# Longest alternatives first; the group keeps the connector so it can be put back in place.
_CONNECTOR = re.compile(
    r"(,\s*and\s+then\s+|,\s*then\s+|,\s*and\s+finally\s+|,\s*after\s+that\s+|\s+and\s+then\s+|\s+then\s+"
    r"|\s+before\s+|\s+followed\s+by\s+|,\s+)",
    re.I,
)


def split_steps(caption: str) -> tuple[str, list[str], list[str], str]:
    """``(subject, steps, connectors, ending)`` of a caption (see the module docstring for the rule).

    >>> split_steps("A person is squinting briefly and then opening their eyes wide.")
    ('A person is ', ['squinting briefly', 'opening their eyes wide'], [' and then '], '.')
    >>> split_steps("A person is smiling while looking up")[1]
    ['smiling while looking up']
    """
    text = caption.strip()
    ending = ""
    while text and text[-1] in ".!":
        ending = text[-1] + ending
        text = text[:-1].rstrip()
    match = _SUBJECT.match(text)
    subject = match.group(1) if match else ""
    parts = _CONNECTOR.split(text[len(subject):])
    steps, connectors = parts[0::2], parts[1::2]
    if any(not step.strip() for step in steps):  # a dangling connector: not a list of steps
        return subject, [text[len(subject):]], [], ending
    return subject, steps, connectors, ending


def swap_steps(caption: str) -> str | None:
    """The caption with its steps in reverse order, or None when it has fewer than two (distinct) steps.

    >>> swap_steps("A person is squinting briefly and then opening their eyes wide")
    'A person is opening their eyes wide and then squinting briefly'
    >>> swap_steps("A person is blinking, smiling, and then frowning")
    'A person is frowning, smiling, and then blinking'
    >>> swap_steps("A person is smiling") is None
    True
    """
    subject, steps, connectors, ending = split_steps(caption)
    if len(steps) < 2 or len(set(steps)) < 2:
        return None
    reverse = steps[::-1]
    body = reverse[0] + "".join(c + s for c, s in zip(connectors, reverse[1:]))
    return subject + body + ending


def multi_step_subset(clips: Sequence[FaceMotion], group_size: int, max_clips: int | None = None) -> list[FaceMotion]:
    """The clips whose caption has two or more steps, in their order, cut to whole groups of ``group_size``
    (at most ``max_clips``)."""
    chosen = [clip for clip in clips if clip.caption and swap_steps(clip.caption) is not None]
    count = len(chosen) if max_clips is None else min(len(chosen), max_clips)
    count -= count % group_size
    if count < group_size:
        raise ValueError(f"only {len(chosen)} multi-step clips, fewer than one group of {group_size}")
    return chosen[:count]


def evaluate_order_swapped(clips: Sequence[FaceMotion], evaluator, **protocol: Any):
    """``(real, swapped)``: :func:`~express4d_hf.evaluation.protocol.evaluate_real` of ``clips`` with their
    captions, and of the same clips with :func:`swap_steps` captions (every clip must have two steps or more:
    pass :func:`multi_step_subset`). Same shuffles and groups, so the two rows differ only in the step order."""
    from .protocol import evaluate_real

    swapped = []
    for i, clip in enumerate(clips):
        caption = swap_steps(clip.caption or "")
        if caption is None:
            raise ValueError(f"clip {i} has a single-step caption ({clip.caption!r}); use multi_step_subset()")
        swapped.append(clip.replace(caption=caption))
    real = evaluate_real(list(clips), evaluator, **protocol)
    control = evaluate_real(swapped, evaluator, **protocol)
    for result, kind in ((real, "own captions"), (control, "captions with the steps swapped")):
        result.info.update(subset="multi-step captions (two or more steps)", captions=kind)
    return real, control


# --- the order probe --------------------------------------------------------------------------------------
GenerateFn = Callable[[list[str], list[int], list[int]], Sequence[FaceMotion]]  # the protocol's generate_fn
ORDER_PROBE_MARGIN = 0.03  # raw ARKit units: the step's channels must differ this much between the halves
ORDER_PROBE_SAMPLES = 4  # generated samples averaged per probe
ORDER_PROBE_FRAMES = 120  # 6 s at 20 fps: room for two steps


@dataclasses.dataclass(frozen=True)
class OrderProbe:
    """A two-step instruction and the ARKit channels each step should move."""

    caption: str
    first: tuple[str, ...]
    second: tuple[str, ...]
    primitives: tuple[str, str] | None = None  # the procedural corpus's primitives of the two steps (reference)

    def __post_init__(self) -> None:
        unknown = [c for c in self.first + self.second if c not in CHANNEL_INDEX]
        if unknown:
            raise ValueError(f"probe {self.caption!r}: unknown ARKit channels {unknown}")
        if set(self.first) & set(self.second):
            raise ValueError(f"probe {self.caption!r}: the two steps share channels")


_SMILE = ("MouthSmileLeft", "MouthSmileRight")
_FROWN = ("MouthFrownLeft", "MouthFrownRight")
_BLINK = ("EyeBlinkLeft", "EyeBlinkRight")
_WIDE = ("EyeWideLeft", "EyeWideRight")
_BROWS_UP = ("BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight")
_BROWS_DOWN = ("BrowDownLeft", "BrowDownRight")
_JAW = ("JawOpen",)
_PUCKER = ("MouthPucker",)
_PUFF = ("CheekPuff",)
_SNEER = ("NoseSneerLeft", "NoseSneerRight")
_TONGUE = ("TongueOut",)
_PRESS = ("MouthPressLeft", "MouthPressRight")
_SQUINT = ("EyeSquintLeft", "EyeSquintRight")

# Written for the probe (present-tense verbs, wordings the corpus's templates never produce: the corpus says
# "A person is smiling ... and then frowning"): 14 pairs of steps, each in both orders, every step naming
# channels that the other step does not move much.
_PAIRS = (  # (words, channels, corpus primitive) of step A and of step B
    (("smiles broadly", _SMILE, "smile"), ("frowns deeply", _FROWN, "frown")),
    (("shuts their eyes tight", _BLINK, "close_eyes"), ("opens their mouth wide", _JAW, "open_mouth")),
    (("raises their eyebrows high", _BROWS_UP, "raise_brows"), ("grins from ear to ear", _SMILE, "smile")),
    (("puckers their lips", _PUCKER, "pucker"), ("puffs out their cheeks", _PUFF, "puff_cheeks")),
    (("wrinkles their nose in disgust", _SNEER, "sneer"), ("stares with wide eyes", _WIDE, "widen_eyes")),
    (("sticks out their tongue", _TONGUE, "tongue_out"), ("scowls with lowered brows", _BROWS_DOWN, "furrow_brows")),
    (("lets their jaw drop open", _JAW, "open_mouth"), ("pulls the corners of their mouth down", _FROWN, "frown")),
    (("squeezes their eyes shut", _BLINK, "close_eyes"), ("presses their lips together", _PRESS, "press_lips")),
    (("inflates their cheeks", _PUFF, "puff_cheeks"), ("lifts both eyebrows", _BROWS_UP, "raise_brows")),
    (("beams with a big smile", _SMILE, "smile"), ("pokes their tongue out", _TONGUE, "tongue_out")),
    (("opens their eyes very wide", _WIDE, "widen_eyes"), ("purses their lips into a kiss", _PUCKER, "pucker")),
    (("sneers", _SNEER, "sneer"), ("lets their mouth hang open", _JAW, "open_mouth")),
    (("narrows their eyes", _SQUINT, "squint"), ("blows up their cheeks", _PUFF, "puff_cheeks")),
    (("knits their brows", _BROWS_DOWN, "furrow_brows"), ("presses their lips tight", _PRESS, "press_lips")),
)
_CONNECTIVES = ("A person first {} and then {}", "A person {}, then {}", "A person {} and afterwards {}",
                "A person {} and after that {}")  # fmt: skip


def _make_probes() -> tuple[OrderProbe, ...]:
    probes = []
    for i, (a, b) in enumerate(_PAIRS):
        template = _CONNECTIVES[i % len(_CONNECTIVES)]
        for first, second in ((a, b), (b, a)):
            probes.append(OrderProbe(template.format(first[0], second[0]), first[1], second[1], (first[2], second[2])))
    return tuple(probes)


ORDER_PROBES: tuple[OrderProbe, ...] = _make_probes()


def reference_generator(seed: int = 0) -> GenerateFn:
    """A ``generate_fn`` for the probes that plays each probe's two steps with the procedural corpus's
    synthesiser (random performer styles): what clips that do follow the order score, the probe's ceiling.
    Only probe captions are understood."""
    from ..data.synthetic import CaptionSpec, PerformerStyle, synthesize_motion

    by_caption = {p.caption: p for p in ORDER_PROBES}

    def generate(captions: list[str], num_frames: list[int], seeds: list[int]) -> list[FaceMotion]:
        motions = []
        for caption, clip_seed in zip(captions, seeds):
            rng = np.random.default_rng([int(seed), int(clip_seed)])
            probe = by_caption[caption]
            spec = CaptionSpec.sequence(*probe.primitives)
            motion = synthesize_motion(spec, PerformerStyle.sample(rng), rng).resample(TRAIN_FPS)
            motions.append(motion.replace(caption=caption))  # its own length: the halves are its own
        return motions

    return generate


def _halves_difference(values: np.ndarray, channels: Sequence[str]) -> float:
    """Mean of ``channels`` over the first half of the frames minus over the second half."""
    columns = [CHANNEL_INDEX[c] for c in channels]
    half = len(values) // 2
    return float(values[:half, columns].mean() - values[half : 2 * half, columns].mean())


def probe_passes(motions: Sequence[FaceMotion], probe: OrderProbe, margin: float = ORDER_PROBE_MARGIN) -> tuple[bool, float, float]:
    """``(passed, first_diff, second_diff)`` for samples of one probe (averaged over the samples).

    ``first_diff`` = first step's channels, first half minus second half (must be >= ``margin``);
    ``second_diff`` = second step's channels, second half minus first half (must be >= ``margin``).
    """
    first = float(np.mean([_halves_difference(m.resample(TRAIN_FPS).values, probe.first) for m in motions]))
    second = -float(np.mean([_halves_difference(m.resample(TRAIN_FPS).values, probe.second) for m in motions]))
    return bool(first >= margin and second >= margin), first, second


def bootstrap_interval(passes: Sequence[bool], draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the pass rate (probes resampled with replacement)."""
    values = np.asarray(passes, dtype=np.float64)
    if not len(values):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


@dataclasses.dataclass
class OrderProbeResult:
    """Order accuracy of one generator over :data:`ORDER_PROBES`."""

    accuracy: float
    ci_low: float
    ci_high: float
    probes: list[dict[str, Any]]
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderProbeResult:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def cell(self, digits: int = 2) -> str:
        """``"0.75 [0.58, 0.92]"``: accuracy and its bootstrap 95 % interval."""
        return f"{self.accuracy:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"


def order_probe(generate_fn: GenerateFn, probes: Sequence[OrderProbe] = ORDER_PROBES,
                samples: int = ORDER_PROBE_SAMPLES, num_frames: int = ORDER_PROBE_FRAMES, seed: int = 0,
                margin: float = ORDER_PROBE_MARGIN) -> OrderProbeResult:  # fmt: skip
    """Order accuracy of ``generate_fn(captions, num_frames, seeds)`` (the protocol's generator signature).

    Each probe's caption is generated ``samples`` times at ``num_frames`` frames (call ``s`` generates every
    probe once; probe ``i`` gets the seed ``seed + 1000 * s + i``); see the module docstring for the pass rule.
    """
    captions = [p.caption for p in probes]
    per_probe: list[list[FaceMotion]] = [[] for _ in probes]
    for s in range(samples):
        seeds = [seed + 1000 * s + i for i in range(len(captions))]
        motions = list(generate_fn(list(captions), [num_frames] * len(captions), seeds))
        if len(motions) != len(captions):
            raise ValueError(f"generate_fn returned {len(motions)} motions for {len(captions)} captions")
        for i, motion in enumerate(motions):
            per_probe[i].append(motion if isinstance(motion, FaceMotion) else FaceMotion(np.asarray(motion), fps=TRAIN_FPS))
    rows, passes = [], []
    for probe, motions in zip(probes, per_probe):
        passed, first, second = probe_passes(motions, probe, margin)
        passes.append(passed)
        rows.append({"caption": probe.caption, "passed": passed, "first_diff": first, "second_diff": second})
    low, high = bootstrap_interval(passes, seed=seed)
    info = {"probes": len(probes), "samples": samples, "num_frames": num_frames, "margin": margin, "seed": seed,
            "interval": "percentile bootstrap over probes, 10000 draws"}  # fmt: skip
    return OrderProbeResult(float(np.mean(passes)), low, high, rows, info)
