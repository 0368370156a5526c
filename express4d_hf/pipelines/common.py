"""What every motion pipeline shares: the output class, input validation, and turning normalised
model output back into ``FaceMotion`` objects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput

from ..core.constants import MAX_FRAMES, MIN_FRAMES, TRAIN_FPS
from ..core.motion import FaceMotion

MAX_PROMPT_CHARS = 300


@dataclass
class MotionPipelineOutput(BaseOutput):
    """Output of every Express4D pipeline.

    Args:
        motions: one :class:`~express4d_hf.FaceMotion` per generated clip (denormalised, 20 fps, caption
            attached), ordered prompt-major: all motions of prompt 0, then of prompt 1, ...
    """

    motions: list[FaceMotion]


@dataclass
class MotionBatchOutput(BaseOutput):
    """Padded-batch output of a pipeline called with ``output_type="pt"``, ``"np"`` or ``"latent"``.

    Args:
        motions: ``[B, T, 61]`` tensor (``"pt"``, ``"latent"``) or array (``"np"``), ``T`` = the longest
            requested length; every frame past a clip's length is zero. ``"pt"``/``"np"`` hold raw ARKit
            values; ``"latent"`` holds the normalised values the model works in.
        lengths: frames of each clip at ``fps``.
        captions: the prompt of each clip (prompt-major order, like :class:`MotionPipelineOutput`).
        fps: frame rate of the frames (20).
    """

    motions: Any
    lengths: list[int]
    captions: list[str]
    fps: float


def check_prompts(prompt: str | list[str]) -> list[str]:
    """Validate and listify prompts: each must be a non-empty string of at most 300 characters."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    if not prompts:
        raise ValueError("`prompt` must be a non-empty string or a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {i} is empty; describe a facial motion, e.g. 'A person is smiling softly'")
        if len(p) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt {i} has {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
    return prompts


def resolve_num_frames(
    num_prompts: int,
    num_frames: int | list[int] | None = None,
    duration_s: float | list[float] | None = None,
    default: int = MAX_FRAMES,
    fps: float = TRAIN_FPS,
) -> list[int]:
    """Per-prompt frame counts at ``fps`` from ``num_frames`` or ``duration_s`` (not both).

    Lengths must lie in [MIN_FRAMES, MAX_FRAMES] (1 s to 9.8 s at 20 fps), the range the models saw.
    """
    if num_frames is not None and duration_s is not None:
        raise ValueError("pass either `num_frames` or `duration_s`, not both")
    if duration_s is not None:
        durations = [duration_s] * num_prompts if not isinstance(duration_s, (list, tuple)) else list(duration_s)
        frames = [int(round(float(d) * fps)) if d is not None and math.isfinite(float(d)) else -1 for d in durations]
    elif num_frames is not None:
        frames = [num_frames] * num_prompts if not isinstance(num_frames, (list, tuple)) else list(num_frames)
    else:
        frames = [default] * num_prompts
    if len(frames) != num_prompts:
        raise ValueError(f"got {len(frames)} lengths for {num_prompts} prompts")
    for f in frames:
        if not isinstance(f, int) or not MIN_FRAMES <= f <= MAX_FRAMES:
            raise ValueError(
                f"length {f} frames is outside [{MIN_FRAMES}, {MAX_FRAMES}] at {fps:g} fps "
                f"({MIN_FRAMES / fps:g} s to {MAX_FRAMES / fps:g} s)"
            )
    return frames


def check_guidance_scale(guidance_scale: float) -> float:
    if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be a finite number >= 0 (1 disables guidance), got {guidance_scale!r}")
    return float(guidance_scale)


def to_face_motions(
    motion: torch.Tensor, lengths: list[int], captions: list[str], fps: float = TRAIN_FPS, **metadata
) -> list[FaceMotion]:
    """Cut a padded, already denormalised batch ``[B, T, 61]`` to ``lengths`` and wrap as FaceMotion."""
    motion = motion.detach().float().cpu().numpy()
    return [
        FaceMotion(motion[i, :n], fps=fps, caption=captions[i], metadata=dict(metadata))
        for i, n in enumerate(lengths)
    ]


def clamp_blendshapes(motion: FaceMotion) -> FaceMotion:
    """A copy of a **generated** motion with its 52 blendshapes clipped to [0, 1], the range Live Link importers
    expect (head and eye rotations untouched); ``metadata["blendshapes_clamped"]`` records it.

    For export of generated motion only: a model can overshoot (a short-trained one gave -0.03..0.46), a capture
    is data and is never altered.
    """
    import numpy as np

    from ..core.arkit import BLENDSHAPES

    values = np.array(motion.values, dtype=np.float32, copy=True)
    count = len(BLENDSHAPES)
    values[:, :count] = np.clip(values[:, :count], 0.0, 1.0)
    return motion.replace(values=values, metadata={**motion.metadata, "blendshapes_clamped": True})


def lengths_mask(lengths: list[int] | torch.Tensor, max_frames: int, device=None) -> torch.Tensor:
    """``[B, max_frames]`` bool mask, True on frames inside each clip."""
    lengths = torch.as_tensor(lengths, device=device)
    return torch.arange(max_frames, device=device)[None, :] < lengths[:, None]


def check_step_callback(pipeline, callback, tensor_inputs) -> list[str]:
    """Validate ``callback_on_step_end`` / ``callback_on_step_end_tensor_inputs`` as diffusers does.

    ``callback`` is a function ``callback(pipeline, step_index, timestep, callback_kwargs) -> dict`` or a
    ``diffusers.callbacks.PipelineCallback`` / ``MultiPipelineCallbacks`` (whose own ``tensor_inputs`` then
    apply). Returns the names to pass; each must be in ``pipeline._callback_tensor_inputs``.
    """
    if callback is None:
        return []
    from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

    if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
        tensor_inputs = callback.tensor_inputs
    elif not callable(callback):
        raise ValueError(f"`callback_on_step_end` must be callable, got {type(callback).__name__}")
    names = list(tensor_inputs or [])
    allowed = list(getattr(pipeline, "_callback_tensor_inputs", []))
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"`callback_on_step_end_tensor_inputs` has {unknown}; {type(pipeline).__name__} passes {allowed}")
    return names


def call_step_callback(pipeline, callback, step_index: int, timestep, names: list[str], values: dict[str, Any]) -> dict:
    """Run ``callback`` with ``{name: values[name]}`` for ``names``; returns what it gave back (a dict)."""
    outputs = callback(pipeline, step_index, timestep, {name: values[name] for name in names})
    if outputs is None:
        return {}
    if not isinstance(outputs, dict):
        raise ValueError(f"`callback_on_step_end` must return a dict of tensors, got {type(outputs).__name__}")
    return outputs


# --- model cards shared by every pipeline ----------------------------------------------------------------
CARD_DATA_FILE = "card_data.json"  # README fields kept next to it, so re-saving a loaded pipeline keeps them


class ModelCardMixin:
    """``save_pretrained`` that also writes ``README.md`` (from ``express4d_hf/hub_cards/<CARD_TEMPLATE>``) and
    ``card_data.json``; ``from_pretrained`` that reads ``card_data.json`` back into :attr:`card_data`;
    ``push_to_hub`` (and ``save_pretrained(..., push_to_hub=True)``) that upload that same card, written before
    the upload, instead of diffusers' generic one.

    Put it before ``DiffusionPipeline`` in the bases and define ``CARD_TEMPLATE``, ``CARD_TAGS`` and
    ``model_card_fields()`` (architecture fields from the configs, updated with :attr:`card_data`: training,
    metrics, ... and :func:`express4d_hf.pipelines.cards.common_card_fields`: front matter with licence,
    ``datasets:`` and ``model-index``).
    """

    CARD_TEMPLATE: str = ""
    CARD_TAGS: tuple[str, ...] = ("express4d", "facial-animation", "text-to-motion", "arkit", "blendshapes")
    CARD_REPO_PLACEHOLDER = "path/to/this/folder"  # the templates' from_pretrained argument; the repo id once pushed

    @property
    def card_data(self) -> dict[str, Any]:
        if "_card_data" not in self.__dict__:
            self.__dict__["_card_data"] = {}
        return self.__dict__["_card_data"]

    @card_data.setter
    def card_data(self, value: dict[str, Any]) -> None:
        self.__dict__["_card_data"] = dict(value)

    def model_card_fields(self) -> dict[str, Any]:  # pragma: no cover - each pipeline overrides it
        return dict(self.card_data)

    def card_fields(self) -> dict[str, Any]:
        """Every placeholder of the card: :meth:`model_card_fields` plus front matter, licence and dataset lines."""
        from .cards import common_card_fields

        fields = self.model_card_fields()
        fields.update(common_card_fields(str(fields.get("model_name") or type(self).__name__), list(self.CARD_TAGS),
                                         self.card_data))  # fmt: skip
        return fields

    def save_pretrained(self, save_directory, *args, model_card: dict[str, Any] | None = None,
                        push_to_hub: bool = False, **kwargs) -> None:  # fmt: skip
        """Save every component (diffusers layout) plus ``README.md`` and ``card_data.json``; ``model_card``
        fields update :attr:`card_data`. With ``push_to_hub=True`` (diffusers' keywords: ``repo_id`` (default:
        the folder's name), ``commit_message``, ``private``, ``create_pr``, ``token``) the folder is uploaded
        once the card is written."""
        import json
        from pathlib import Path

        from ..core.io import atomic_write_text
        from .loading import write_model_card

        hub = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "create_pr", "token") if k in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        if model_card:
            self.card_data.update(model_card)
        folder = Path(save_directory)
        atomic_write_text(folder / CARD_DATA_FILE, json.dumps(self.card_data, indent=2, default=str) + "\n")
        write_model_card(folder, self.CARD_TEMPLATE, self.card_fields())
        if push_to_hub:
            repo_id = hub.pop("repo_id", None) or folder.resolve().name
            self._upload_pipeline_folder(folder, repo_id, **hub)

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                    token: str | None = None, create_pr: bool = False, safe_serialization: bool = True,
                    variant: str | None = None, model_card: dict[str, Any] | None = None, **kwargs) -> str:  # fmt: skip
        """Save the pipeline with this project's card (``README.md``, ``card_data.json``) into a temporary folder
        and upload it to the Hub model repo ``repo_id`` (created if needed) in one commit; returns the commit URL."""
        import tempfile

        if kwargs.get("subfolder"):
            raise ValueError("push_to_hub(subfolder=...) is not supported for Express4D pipelines: push the whole pipeline")
        with tempfile.TemporaryDirectory(prefix="express4d-push-") as tmp:
            self.save_pretrained(tmp, safe_serialization=safe_serialization, variant=variant, model_card=model_card)
            return self._upload_pipeline_folder(tmp, repo_id, commit_message=commit_message, private=private,
                                                token=token, create_pr=create_pr)  # fmt: skip

    def _upload_pipeline_folder(self, folder, repo_id: str, commit_message: str | None = None,
                                private: bool | None = None, token: str | None = None, create_pr: bool = False) -> str:  # fmt: skip
        from pathlib import Path

        from huggingface_hub import HfApi

        from ..core.io import atomic_write_text

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        readme = Path(folder) / "README.md"
        text = readme.read_text(encoding="utf-8")
        if self.CARD_REPO_PLACEHOLDER in text:  # the card's examples load this repository
            atomic_write_text(readme, text.replace(self.CARD_REPO_PLACEHOLDER, repo_id))
        return str(api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=commit_message or f"Upload {type(self).__name__}",
            create_pr=create_pr, ignore_patterns=[".*", "**/.*"],
        ))  # fmt: skip

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        import json
        from pathlib import Path

        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)  # type: ignore[misc]
        card = Path(str(pretrained_model_name_or_path)) / CARD_DATA_FILE
        if not card.is_file() and not Path(str(pretrained_model_name_or_path)).exists():
            try:  # a Hub repository: its card data comes from the same snapshot (cached, or offline-safe)
                from huggingface_hub import hf_hub_download

                card = Path(hf_hub_download(str(pretrained_model_name_or_path), CARD_DATA_FILE))
            except Exception:  # noqa: BLE001 - an older upload without card_data.json, or offline: keep the defaults
                pass
        if card.is_file():
            pipe.card_data = json.loads(card.read_text())
        return pipe
