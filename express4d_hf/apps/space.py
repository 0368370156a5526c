"""The Express4D Gradio app: type a sentence and watch a 3D face perform it, browse the data, contribute takes.

One app factory serves both the Hugging Face Space (``spaces/express4d/app.py`` is a short launcher)
and ``express4d demo``, so what runs locally is exactly what runs online. It sits at the top of the
package, beside the command line: nothing else in ``express4d_hf`` imports it, and gradio is imported
only here (``pip install express4d-hf[demo]``).

Tabs:

* **Generate**: prompt (with examples), model (MDM / T2M-GPT), duration, sampling settings and seed
  -> the animated Face Cap head in the page (three.js, served by the app itself: no CDN), the curves
  of the most active channels, and downloads of the Live Link Face CSV (60 fps) and the animated GLB.
  The same function is the ``/generate`` API endpoint: only the prompt is required, and it returns the
  CSV file and the motion as JSON.
* **Browse**: search the dataset's captions, play a clip on the same head with its curves.
* **Contribute**: a random instruction to perform, upload of the recorded Live Link Face CSV, a
  validation report (:mod:`express4d_hf.contribute`), and storage only with explicit consent.

Every failure reaches the page as a readable message (``gr.Error``), never a stack trace.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..core.constants import MAX_FRAMES, MIN_FRAMES, RECOMMENDED_GUIDANCE_RESCALE, TRAIN_FPS
from .contribute import (
    CONSENT_TEXT,
    CONTRIBUTION_LICENSE,
    ContributionError,
    DuplicateContributionError,
    StoreFullError,
    StoreQuota,
    ValidationRules,
    open_hub_pull_request,
    random_instruction,
    store_contribution,
    validate_take,
)
from ..core.motion import FaceMotion
from ..livelink import LiveLinkFormatError, write_livelink_csv
from ..pipelines.common import MAX_PROMPT_CHARS, check_prompts
from ..export.plotting import caption_slug

logger = logging.getLogger(__name__)

VIEWER_DIR = Path(__file__).resolve().parent.parent / "assets" / "viewer"  # express4d_hf/assets/viewer
VIEWER_BUNDLE = VIEWER_DIR / "express4d-viewer.min.js"

#: model_index.json ``_class_name`` -> the name the app shows.
MODEL_LABELS = {"Express4DMDMPipeline": "MDM", "Express4DT2MGPTPipeline": "T2M-GPT"}
MODEL_CHOICES = ("MDM", "T2M-GPT")
DEFAULT_MODEL_SEARCH = ("runs",)  # `express4d train mdm` writes runs/mdm, `... t2m-gpt` runs/t2m_gpt
TRAIN_COMMAND = "express4d train mdm --preset tiny --out runs/mdm"

#: The paper's example instruction (DESIGN.md) first, then instructions in the dataset's style.
EXAMPLE_PROMPTS = (
    "A person is tilting their head slightly and then smiling softly",
    "A person is raising their eyebrows in surprise and then frowning",
    "A person is winking with their left eye while smiling",
    "A person is squinting suspiciously and then opening their eyes wide",
    "A person is puffing their cheeks and then pressing their lips together",
    "A person is opening their mouth wide as if yawning, then blinking slowly",
)

MIN_DURATION_S, MAX_DURATION_S = MIN_FRAMES / TRAIN_FPS, MAX_FRAMES / TRAIN_FPS  # 1 to 9.8 s, what the models saw
MAX_STEPS = 200  # DDIM needs 20-100; the 1000-step DDPM baseline is `express4d generate --scheduler ddpm`
MAX_UPLOAD = "20mb"
KEEP_REQUEST_DIRS = 64  # generated files of the last N requests stay downloadable

# System fonts: the default theme fonts would be fetched from a font CDN, and the app must work offline.
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
SYSTEM_MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")

APP_CSS = """
#e4d-header h1 { margin-bottom: 0.1em; }
#e4d-header p { margin-top: 0.2em; opacity: 0.85; }
.e4d-notice { border-left: 4px solid var(--color-accent, #f97316); padding-left: 0.8em; }
"""


class SpaceError(ValueError):
    """A problem the person using the app can fix; shown as it is."""


# =====================================================================================================
# configuration and models
# =====================================================================================================
@dataclasses.dataclass
class SpaceConfig:
    """Where the app finds its models and data, and where it writes.

    Attributes:
        models: pipeline folders, folders holding pipeline folders (``runs/``), or Hub repo ids.
        data: the dataset for Browse (see :func:`express4d_hf.data.hub.resolve_dataset_dir`;
            ``None`` is the procedural corpus).
        contributions_dir: where accepted contributions are stored (release layout).
        contributions_repo, hub_token: when both are set, contributions become pull requests to
            this Hub dataset repository instead of local files.
        contributions_quota: total size and number of takes the local contributions folder may hold
            (2 GiB and 5,000 by default); beyond it, submissions are refused with a message.
        output_dir: generated files (served to the page); a fresh temporary folder by default.
        concurrency: how many requests run at once (generation itself runs one at a time).
        max_queue: requests waiting beyond that are refused with a message.
        default_steps: MDM denoising steps when the caller gives none (the slider's start value).
        cache_dir: where datasets are built and cached (default ``$EXPRESS4D_CACHE`` or ``~/.cache/express4d_hf``).
    """

    models: list[str] = dataclasses.field(default_factory=list)
    data: str | None = None
    contributions_dir: Path = Path("contributions")
    contributions_repo: str | None = None
    hub_token: str | None = None
    output_dir: Path | None = None
    concurrency: int = 2
    max_queue: int = 32
    default_steps: int = 50
    cache_dir: Path | None = None
    validation_rules: ValidationRules = dataclasses.field(default_factory=ValidationRules)
    contributions_quota: StoreQuota = dataclasses.field(default_factory=StoreQuota)

    @classmethod
    def from_env(cls, **overrides: Any) -> SpaceConfig:
        """Configuration from environment variables (how a Space is configured), then ``overrides``.

        ``EXPRESS4D_MODELS`` (comma-separated folders or Hub repo ids), ``EXPRESS4D_DATA``,
        ``EXPRESS4D_CONTRIBUTIONS`` (default ``/data/contributions`` on a Space with persistent
        storage, else ``./contributions``), ``EXPRESS4D_CONTRIBUTIONS_REPO`` with ``HF_TOKEN``,
        ``EXPRESS4D_CONTRIBUTIONS_MAX_BYTES`` and ``EXPRESS4D_CONTRIBUTIONS_MAX_TAKES`` (the store's quota; ``0``
        means no limit).
        """
        env = os.environ
        persistent = Path("/data")
        default_contrib = persistent / "contributions" if persistent.is_dir() and os.access(persistent, os.W_OK) else Path("contributions")  # fmt: skip
        config = cls(
            models=[m.strip() for m in env.get("EXPRESS4D_MODELS", "").split(",") if m.strip()],
            data=env.get("EXPRESS4D_DATA") or None,
            contributions_dir=Path(env.get("EXPRESS4D_CONTRIBUTIONS", default_contrib)),
            contributions_repo=env.get("EXPRESS4D_CONTRIBUTIONS_REPO") or None,
            hub_token=env.get("HF_TOKEN") or None,
            contributions_quota=StoreQuota(
                max_bytes=_env_limit(env, "EXPRESS4D_CONTRIBUTIONS_MAX_BYTES", StoreQuota.max_bytes),
                max_takes=_env_limit(env, "EXPRESS4D_CONTRIBUTIONS_MAX_TAKES", StoreQuota.max_takes),
            ),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        return config


def _env_limit(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A non-negative integer limit from the environment (``0``: no limit); a bad value is an error naming it."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        number = float(text)
        value = int(number) if number.is_integer() else -1
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        raise ValueError(f"{name}={text!r}: expected a whole number >= 0 (0 means no limit)")
    return value or None


def discover_models(sources: Iterable[str | os.PathLike]) -> tuple[dict[str, str], list[str]]:
    """``({label: folder or repo id}, [problems])`` for the pipelines found in ``sources``.

    A source is a pipeline folder, a folder of pipeline folders, or a Hub repo id. The first pipeline
    of each kind wins. Unreadable sources are reported, not raised: the app starts without them.
    """
    from ..pipelines.loading import PipelineLoadError, pipeline_class_name

    models: dict[str, str] = {}
    problems: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            candidates = [path] if (path / "model_index.json").is_file() else sorted(p.parent for p in path.glob("*/model_index.json"))
            if not candidates:
                problems.append(f"{path}: no model_index.json in it or in its sub-folders")
        elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)) and not str(source).startswith("."):
            candidates = [str(source)]
        else:
            problems.append(f"{source}: no such folder")
            continue
        for candidate in candidates:
            try:
                class_name = pipeline_class_name(candidate)
            except PipelineLoadError as err:
                problems.append(str(err))
                continue
            label = MODEL_LABELS.get(class_name)
            if label is None:
                logger.debug("%s: %s is not a generation pipeline; skipped", candidate, class_name)
                continue
            models.setdefault(label, str(candidate))
    return models, problems


def no_model_message(problems: list[str] | None = None) -> str:
    lines = [
        "**No trained model is loaded**, so Generate cannot run yet (Browse and Contribute work).",
        (f"Train the tiny preset in a few CPU minutes with `{TRAIN_COMMAND}`, then start "
         "`express4d demo --model runs/mdm`."),
    ]
    if problems:
        lines.append("Model sources that could not be used: " + "; ".join(problems[:3]))
    return "\n\n".join(lines)


# =====================================================================================================
# the app
# =====================================================================================================
def _user_errors(fn: Callable) -> Callable:
    """Turn every exception into a ``gr.Error`` with a readable message; log unexpected ones in full."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import gradio as gr

        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (SpaceError, ContributionError, LiveLinkFormatError, ValueError, FileNotFoundError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:
            logger.exception("unexpected error in %s", getattr(fn, "__name__", fn))
            raise gr.Error(
                f"Something went wrong ({type(err).__name__}); it was logged on the server. Try again, or change the inputs.",
                print_exception=False,
            ) from None

    return wrapper


class Express4DSpace:
    """The app: models, dataset and contributions behind a ``gr.Blocks`` (:attr:`blocks`).

    Use :meth:`launch` rather than ``blocks.launch``: it adds the settings the page needs (the
    folders the viewer loads from, upload limit, queue, theme and CSS).
    """

    def __init__(self, config: SpaceConfig | None = None):
        self.config = config or SpaceConfig()
        sources = self.config.models or [p for p in DEFAULT_MODEL_SEARCH if Path(p).is_dir()]
        self.models, self.model_problems = discover_models(sources)
        if self.config.output_dir is None:
            self.output_dir = Path(tempfile.mkdtemp(prefix="express4d-space-"))
            atexit.register(shutil.rmtree, self.output_dir, ignore_errors=True)
        else:
            self.output_dir = Path(self.config.output_dir).resolve()
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self._pipelines: dict[str, Any] = {}
        self._pipeline_lock = threading.Lock()
        self._dataset = None
        self._dataset_index: list[tuple[str, int, str, str]] | None = None
        self._dataset_lock = threading.Lock()
        self._head_url = self._write_rest_head()
        self.blocks = self._build()

    # -- files served to the page ----------------------------------------------------------------------
    @staticmethod
    def file_url(path: str | os.PathLike) -> str:
        """URL (relative to the app root) at which Gradio serves an allowed file."""
        return "gradio_api/file=" + Path(path).resolve().as_posix()

    def module_url(self) -> str:
        digest = hashlib.sha256(VIEWER_BUNDLE.read_bytes()).hexdigest()[:12] if VIEWER_BUNDLE.is_file() else "missing"
        return f"{self.file_url(VIEWER_BUNDLE)}?v={digest}"

    def _request_dir(self) -> Path:
        folder = self.output_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        dirs = sorted((p for p in self.output_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in dirs[:-KEEP_REQUEST_DIRS]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def _write_rest_head(self) -> str | None:
        try:
            from ..export.facecap import head_glb_bytes

            path = self.output_dir / "facecap_head_rest.glb"
            path.write_bytes(head_glb_bytes())
            return self.file_url(path)
        except (ImportError, FileNotFoundError) as err:
            logger.warning("the rest-pose head is unavailable (%s); viewers start empty", err)
            return None

    def _viewer_value(self, glb: str | os.PathLike | None, caption: str = "", message: str = "") -> str:
        if glb is None:
            return json.dumps({"glb": None, "message": message})
        return json.dumps({"glb": self.file_url(glb), "caption": caption})

    def _initial_viewer_value(self, message: str) -> str:
        if self._head_url is None:
            return json.dumps({"glb": None, "message": message})
        return json.dumps({"glb": self._head_url, "caption": message, "autoplay": False})

    def render_motion(self, motion: FaceMotion, folder: Path, stem: str, title: str | None = None) -> tuple[Path, Path]:
        """Animated GLB (blendshapes clamped to [0, 1], licence notice beside it) and curve PNG of ``motion``."""
        from ..export.gltf import motion_to_gltf
        from ..export.plotting import plot_channel_curves

        glb = motion_to_gltf(motion, folder / f"{stem}.glb", clamp=True)
        png = plot_channel_curves(motion, folder / f"{stem}_curves.png", top_k=8, title=title)
        return glb, png

    # -- generation ------------------------------------------------------------------------------------
    def pipeline(self, label: str):
        """The loaded pipeline for ``label`` (loaded once, on first use)."""
        if label not in self.models:
            if not self.models:
                raise SpaceError(no_model_message(self.model_problems).replace("**", ""))
            available = ", ".join(sorted(self.models))
            raise SpaceError(f"no {label} model is loaded here (available: {available}). Pick another model, or "
                             f"train one and pass it with `express4d demo --model DIR`.")  # fmt: skip
        with self._pipeline_lock:
            if label not in self._pipelines:
                import torch

                from ..pipelines.loading import load_pipeline

                logger.info("loading the %s pipeline from %s", label, self.models[label])
                pipe = load_pipeline(self.models[label])
                if label == "MDM":
                    from ..pipelines.mdm import make_scheduler

                    # The saved DDPM schedule is meant for 1000 steps; DDIM samples well in 20-100
                    # (the same default as `express4d generate`).
                    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
                if torch.cuda.is_available():
                    pipe = pipe.to("cuda")
                    if label == "MDM":  # bf16 + the DDIM loop replayed as a CUDA graph (events run one at a time)
                        pipe.enable_fast_sampling()
                self._pipelines[label] = pipe
            return self._pipelines[label]

    def generate_motion(
        self,
        prompt: str,
        model: str = "MDM",
        duration_s: float = 4.0,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.5,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> FaceMotion:
        """Validate the inputs, run the chosen pipeline once, return the 20 fps motion."""
        import torch

        prompt = (prompt or "").strip() if isinstance(prompt, str) or prompt is None else prompt
        if not prompt:
            raise SpaceError(f"the prompt is empty: describe a facial motion, e.g. '{EXAMPLE_PROMPTS[0]}'")
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            size = f"{len(prompt)} characters" if isinstance(prompt, str) else f"a {type(prompt).__name__}"
            raise SpaceError(f"the prompt must be text of at most {MAX_PROMPT_CHARS} characters; got {size}")
        prompt = check_prompts(prompt)[0]
        model = model or "MDM"
        if model not in MODEL_CHOICES:
            raise SpaceError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
        duration_s = float(duration_s)
        if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
            raise SpaceError(f"duration must be between {MIN_DURATION_S:g} and {MAX_DURATION_S:g} s, got {duration_s:g}")
        seed = int(seed)
        if not 0 <= seed < 2**63:
            raise SpaceError(f"seed must be a non-negative integer, got {seed}")
        pipe = self.pipeline(model)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        if model == "MDM":
            steps = int(num_inference_steps)
            if not 1 <= steps <= MAX_STEPS:
                raise SpaceError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
            out = pipe(prompt, duration_s=duration_s, num_inference_steps=steps, guidance_scale=float(guidance_scale),
                       guidance_rescale=RECOMMENDED_GUIDANCE_RESCALE, generator=generator)  # fmt: skip
        else:
            temperature = float(temperature)
            if not 0.0 <= temperature <= 5.0:
                raise SpaceError(f"temperature must be between 0 (greedy) and 5, got {temperature:g}")
            out = pipe(prompt, num_frames=round(duration_s * TRAIN_FPS), temperature=temperature, generator=generator)
        motion = out.motions[0]
        motion.metadata.update(model=model, seed=seed, prompt=prompt)
        return motion

    def generate(self, prompt, model="MDM", duration_s=4.0, num_inference_steps=50, guidance_scale=2.5,
                 temperature=1.0, seed=0):  # fmt: skip
        """The ``/generate`` endpoint: ``(Live Link CSV at 60 fps, motion JSON, state for the page)``."""
        motion = self.generate_motion(prompt, model, duration_s, num_inference_steps, guidance_scale, temperature, seed)
        folder = self._request_dir()
        stem = f"express4d_{caption_slug(motion.caption)}"
        csv_path = folder / f"{stem}.csv"
        write_livelink_csv(motion, csv_path, fps=60)
        return str(csv_path), motion.to_dict(), {"folder": str(folder), "stem": stem, "motion": motion.to_dict()}

    def present_generated(self, state: dict | None):
        """Viewer value, curves PNG and GLB for the motion the last ``generate`` call made."""
        if not state:
            raise SpaceError("nothing generated yet: type a prompt and press Generate")
        motion = FaceMotion.from_dict(state["motion"])
        glb, png = self.render_motion(motion, Path(state["folder"]), state["stem"], title=motion.caption)
        return self._viewer_value(glb, motion.caption or ""), str(png), str(glb)

    # -- browse ------------------------------------------------------------------------------------------
    def dataset(self):
        with self._dataset_lock:
            if self._dataset is None:
                from ..data.hub import load_express4d

                ds = load_express4d(self.config.data, cache_dir=self.config.cache_dir, progress=False)
                index = []
                for split in ds:
                    table = ds[split].select_columns(["id", "caption"])
                    for i, (clip_id, caption) in enumerate(zip(table["id"], table["caption"])):
                        index.append((split, i, clip_id, caption))
                self._dataset, self._dataset_index = ds, index
            return self._dataset

    def search_clips(self, query: str = "", limit: int = 200) -> list[tuple[str, str]]:
        """``(label, value)`` dropdown choices of the clips whose caption or id holds every word of ``query``."""
        self.dataset()
        words = (query or "").lower().split()
        matches = []
        for split, i, clip_id, caption in self._dataset_index or []:
            text = f"{clip_id} {caption}".lower()
            if all(w in text for w in words):
                matches.append((f"[{split}] {caption}  ({clip_id})", f"{split}:{i}"))
                if len(matches) >= limit:
                    break
        return matches

    def load_clip(self, key: str) -> FaceMotion:
        split, _, index = (key or "").partition(":")
        ds = self.dataset()
        if split not in ds or not index.isdigit() or int(index) >= len(ds[split]):
            raise SpaceError("pick a clip from the list first")
        row = ds[split].with_format("numpy")[int(index)]
        return FaceMotion(
            np.asarray(row["motion"], dtype=np.float32), fps=float(row["fps"]), valid=np.asarray(row["valid"], dtype=bool),
            caption=str(row["caption"]),
            metadata={"id": str(row["id"]), "split": split, "performer": int(row["performer"]),
                      "captions": [str(c) for c in row["captions"]]},
        )  # fmt: skip

    def present_clip(self, key: str):
        motion = self.load_clip(key)
        folder = self._request_dir()
        glb, png = self.render_motion(motion, folder, caption_slug(motion.metadata["id"], limit=80), title=motion.caption)
        captions = "\n".join(f"- {c}" for c in motion.metadata["captions"])
        info = (f"**{motion.metadata['id']}** ({motion.metadata['split']} split, performer {motion.metadata['performer']}, "
                f"{motion.duration:.1f} s at {motion.fps:g} fps)\n\n{captions}")  # fmt: skip
        return self._viewer_value(glb, motion.caption or ""), str(png), info

    # -- contribute ------------------------------------------------------------------------------------
    def check_upload(self, path: str | None):
        """Validate an upload: ``(report markdown, curves PNG or None, file to keep or None)``.

        A rejected upload is deleted at once and cleared from the page.
        """
        if not path:
            return "Upload the Live Link Face CSV of your take.", None, None
        try:
            report = validate_take(path, self.config.validation_rules)
        except BaseException:
            _discard_upload(path)  # never keep a file that could not even be checked
            raise
        png = None
        if report.motion is not None and report.ok:
            folder = self._request_dir()
            from ..export.plotting import plot_channel_curves

            png = str(plot_channel_curves(report.motion, folder / "upload_curves.png", top_k=8, title="Your take"))
        if not report.ok:
            _discard_upload(path)
            return report.to_markdown(), None, None
        return report.to_markdown(), png, path

    def submit(self, path: str | None, caption: str, contributor: str, consent: bool, instruction: str):
        """Store (or send as a Hub pull request) an accepted take; consent is required."""
        if not consent:
            raise SpaceError("please tick the consent and licence box first: nothing is stored without it")
        if not path:
            raise SpaceError("upload the CSV of your take first")
        report = validate_take(path, self.config.validation_rules)  # check again: never trust the page state
        if not report.ok:
            _discard_upload(path)
            raise SpaceError("the take was rejected: " + "; ".join(c.message for c in report.failed))
        instruction_text = _strip_instruction(instruction)
        if self.config.contributions_repo and self.config.hub_token:
            stored = open_hub_pull_request(report, caption, repo_id=self.config.contributions_repo,
                                           token=self.config.hub_token, consent=bool(consent),
                                           contributor=contributor, instruction=instruction_text)  # fmt: skip
            where = f"as a pull request to `{self.config.contributions_repo}`: {stored.pr_url}"
        else:
            try:
                stored = store_contribution(report, caption, self.config.contributions_dir, consent=bool(consent),
                                            contributor=contributor, instruction=instruction_text,
                                            quota=self.config.contributions_quota)  # fmt: skip
            except (DuplicateContributionError, StoreFullError):
                _discard_upload(path)  # it will not be stored: do not keep it either
                raise
            where = "in the contributions folder"
        _discard_upload(path)
        return f"### Thank you! Stored take `{stored.take}` {where}.", None

    # -- layout ----------------------------------------------------------------------------------------
    def _viewer(self, message: str, elem_id: str):
        import gradio as gr

        template = (VIEWER_DIR / "viewer.html").read_text().replace("@MODULE_URL@", self.module_url())
        loader = (
            "const root = element.querySelector('.e4d-viewer');"
            "const base = String((window.gradio_config && window.gradio_config.root) || document.baseURI).replace(/\\/?$/, '/');"
            "import(new URL(root.dataset.module, base).href)"
            ".then((m) => m.mount(element, props, watch))"
            ".catch((err) => { root.dataset.state = 'error';"
            " root.querySelector('.e4d-overlay').textContent = 'The 3D viewer could not load (' + err + ').'; });"
        )
        return gr.HTML(
            value=self._initial_viewer_value(message), html_template=template,
            css_template=(VIEWER_DIR / "viewer.css").read_text(), js_on_load=loader, elem_id=elem_id,
            apply_default_css=False,
        )  # fmt: skip

    def _build(self):
        import gradio as gr

        default_model = next((m for m in MODEL_CHOICES if m in self.models), MODEL_CHOICES[0])
        with gr.Blocks(title="Express4D: text to 3D facial motion", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(
                "# Express4D: text to 3D facial motion\n"
                "Describe a facial performance and watch a 3D head act it out: 61 ARKit channels (52 blendshapes, "
                "head and eye rotation) as recorded by Live Link Face, from the baselines of the "
                "[Express4D benchmark](https://arxiv.org/abs/2508.12438).",
                elem_id="e4d-header",
            )
            with gr.Tab("Generate", id="generate"):
                if not self.models:
                    gr.Markdown(no_model_message(self.model_problems), elem_classes=["e4d-notice"], elem_id="e4d-no-model")
                with gr.Row():
                    with gr.Column(scale=2):
                        prompt = gr.Textbox(label="Prompt", placeholder=EXAMPLE_PROMPTS[0], max_length=MAX_PROMPT_CHARS,
                                            lines=2, elem_id="e4d-prompt")  # fmt: skip
                        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Examples")
                        model = gr.Radio(list(MODEL_CHOICES), value=default_model, label="Model")
                        duration = gr.Slider(MIN_DURATION_S, MAX_DURATION_S, value=4.0, step=0.1, label="Duration (s)")
                        with gr.Accordion("Sampling", open=False):
                            steps = gr.Slider(1, MAX_STEPS, value=self.config.default_steps, step=1, label="Denoising steps (MDM, DDIM sampler)")
                            guidance = gr.Slider(0.0, 10.0, value=2.5, step=0.1, label="Guidance scale (MDM)")
                            temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Temperature (T2M-GPT; 0 = greedy)")
                            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                        button = gr.Button("Generate", variant="primary", elem_id="e4d-generate")
                    with gr.Column(scale=3):
                        viewer = self._viewer("Type a sentence and press Generate.", "e4d-viewer-generate")
                        curves = gr.Image(label="Most active channels", show_label=False, type="filepath",
                                          interactive=False, elem_id="e4d-curves")  # fmt: skip
                        with gr.Row():
                            csv_file = gr.File(label="Live Link Face CSV (60 fps)", elem_id="e4d-csv")
                            glb_file = gr.File(label="Animated head (GLB)", elem_id="e4d-glb")
                        with gr.Accordion("Motion JSON (20 fps)", open=False):
                            motion_json = gr.JSON(label="Motion")
                state = gr.State()
                inputs = [prompt, model, duration, steps, guidance, temperature, seed]
                generated = gr.on(
                    [button.click, prompt.submit], _user_errors(self.generate), inputs=inputs,
                    outputs=[csv_file, motion_json, state], api_name="generate", concurrency_limit=1,
                    api_description="Generate a facial motion from text. Returns the Live Link Face CSV (60 fps) and "
                                    "the motion as JSON (20 fps, 61 ARKit channels).",
                )  # fmt: skip
                generated.success(_user_errors(self.present_generated), inputs=[state],
                                  outputs=[viewer, curves, glb_file], api_visibility="private")  # fmt: skip

            with gr.Tab("Browse", id="browse"):
                gr.Markdown("Search the dataset's captions and play a clip on the same head. "
                            "(Without `--data`, this is the procedural stand-in corpus, not real captures.)")  # fmt: skip
                with gr.Row():
                    with gr.Column(scale=2):
                        query = gr.Textbox(label="Caption search", placeholder="smile, wink, brow ...", elem_id="e4d-search")
                        clip = gr.Dropdown(label="Clip", choices=[], elem_id="e4d-clip")
                        clip_info = gr.Markdown()
                    with gr.Column(scale=3):
                        browse_viewer = self._viewer("Pick a clip to play it.", "e4d-viewer-browse")
                        browse_curves = gr.Image(label="Most active channels", show_label=False, type="filepath",
                                                 interactive=False)  # fmt: skip

                def list_clips(text, select_first=True):
                    choices = self.search_clips(text)
                    return gr.Dropdown(choices=choices, value=choices[0][1] if choices and select_first else None,
                                       info=f"{len(choices)} clip(s)" + (" (first 200)" if len(choices) >= 200 else ""))  # fmt: skip

                query.submit(_user_errors(list_clips), inputs=[query], outputs=[clip], api_visibility="private")
                # On page load only fill the list: rendering a clip for every visitor would be wasted work.
                demo.load(_user_errors(functools.partial(list_clips, select_first=False)), inputs=[query],
                          outputs=[clip], api_visibility="private")  # fmt: skip
                clip.change(_user_errors(self.present_clip), inputs=[clip], outputs=[browse_viewer, browse_curves, clip_info],
                            api_visibility="private")  # fmt: skip

            with gr.Tab("Contribute", id="contribute"):
                gr.Markdown(
                    "Help Express4D grow. Perform the instruction in front of an iPhone running Live Link Face "
                    "(mode *Live Link (ARKit)*, 60 fps), export the take's CSV, and upload it here. The take is checked "
                    "first; nothing is stored unless you agree below, and rejected files are deleted at once."
                )
                with gr.Row():
                    with gr.Column():
                        instruction = gr.Markdown(_instruction_markdown(random_instruction(0)), elem_id="e4d-instruction")
                        new_instruction = gr.Button("Another instruction", size="sm")
                        caption = gr.Textbox(label="Caption (what you performed; edit if you did something else)",
                                             value=random_instruction(0), max_length=MAX_PROMPT_CHARS, lines=2)  # fmt: skip
                        upload = gr.File(label="Live Link Face CSV (at most 20 MB)", file_types=[".csv"], type="filepath",
                                         elem_id="e4d-upload")  # fmt: skip
                        contributor = gr.Textbox(label="Your name or handle (optional, published with the take)", max_length=64)
                        consent = gr.Checkbox(label=CONSENT_TEXT, value=False, elem_id="e4d-consent")
                        submit = gr.Button("Submit take", variant="primary")
                    with gr.Column():
                        report = gr.Markdown("Upload the Live Link Face CSV of your take.", elem_id="e4d-report")
                        report_curves = gr.Image(label="Your take's most active channels", show_label=False, type="filepath",
                                                 interactive=False)  # fmt: skip
                        result = gr.Markdown()

                def another():
                    text = random_instruction(random.SystemRandom().randrange(2**31))
                    return _instruction_markdown(text), text

                new_instruction.click(another, outputs=[instruction, caption], api_visibility="private")
                demo.load(another, outputs=[instruction, caption], api_visibility="private")  # one per visitor
                upload.upload(_user_errors(self.check_upload), inputs=[upload], outputs=[report, report_curves, upload],
                              api_visibility="private")  # fmt: skip
                submit.click(_user_errors(self.submit), inputs=[upload, caption, contributor, consent, instruction],
                             outputs=[result, upload], api_visibility="private")  # fmt: skip

            with gr.Accordion("Credits and licences", open=False, elem_id="e4d-credits"):
                gr.Markdown(credits_markdown())
        return demo

    # -- launching ---------------------------------------------------------------------------------------
    def launch_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """``launch()`` keyword arguments with what the app needs added (explicit ones win, lists are merged)."""
        import gradio as gr

        allowed = list(kwargs.pop("allowed_paths", None) or [])
        allowed += [str(self.output_dir), str(VIEWER_DIR)]
        settings: dict[str, Any] = {
            "max_file_size": MAX_UPLOAD,
            "theme": gr.themes.Soft(primary_hue="orange", font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS),
            "css": APP_CSS,
            "ssr_mode": False,
            "show_error": True,
            "footer_links": ["api", "gradio"],
        }
        settings.update(kwargs)
        settings["allowed_paths"] = allowed
        return settings

    def launch(self, **kwargs: Any):
        """Start the server (bounded queue and concurrency) and return what ``gr.Blocks.launch`` returns."""
        self.blocks.queue(default_concurrency_limit=self.config.concurrency, max_size=self.config.max_queue)
        return self.blocks.launch(**self.launch_kwargs(**kwargs))

    def close(self) -> None:
        self.blocks.close()


def _discard_upload(path: str | os.PathLike) -> None:
    """Delete an uploaded file (rejected or already stored) from Gradio's upload cache."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not delete the upload %s (%s)", path, err)


def _instruction_markdown(text: str) -> str:
    return f"**Your instruction:** {text}"


def _strip_instruction(markdown: str | None) -> str | None:
    text = (markdown or "").replace("**Your instruction:**", "").strip()
    return text or None


def credits_markdown() -> str:
    """The credits section: the head's licence notice (it must ship visibly), three.js, the paper and the data."""
    try:
        from ..export.facecap import LICENSE_PATH

        head_licence = LICENSE_PATH.read_text(encoding="utf-8").strip()
    except (ImportError, OSError):
        head_licence = "MIT License\n\nCopyright (c) 2019 niels jansson"
    three_licence = (VIEWER_DIR / "LICENSE.three.txt")
    three_line = three_licence.read_text(encoding="utf-8").splitlines()[2].strip() if three_licence.is_file() else ""
    return (
        "**3D head:** the Face Cap generic head by Niels Jansson "
        "([hizzlehoff/FaceCapOSCReceiverExample](https://github.com/hizzlehoff/FaceCapOSCReceiverExample)), "
        "converted to glTF by express4d-hf. Every GLB this app writes carries this notice:\n\n"
        f"```\n{head_licence}\n```\n\n"
        f"**Viewer:** [three.js](https://threejs.org) (MIT License, {three_line or 'Copyright 2010-2026 Three.js Authors'}), "
        "bundled with the app; no code is fetched from other sites.\n\n"
        "**Benchmark:** Aloni, Shalev-Arkushin, Shafir, Tevet, Fried and Bermano, *Express4D: Expressive, Friendly, "
        "and Extensible 4D Facial Motion Generation Benchmark*, DataCV @ ICCV 2025 "
        "([arXiv 2508.12438](https://arxiv.org/abs/2508.12438)). The Express4D captures have their own research-only "
        "terms; the procedural stand-in corpus is synthetic.\n\n"
        f"**Contributions** are published under {CONTRIBUTION_LICENSE} with each contributor's explicit consent.\n\n"
        "**Code:** express4d-hf (Apache-2.0)."
    )


def build_app(
    models: list[str | os.PathLike] | None = None,
    data: str | os.PathLike | None = None,
    **config: Any,
) -> Express4DSpace:
    """The app configured from the environment (see :meth:`SpaceConfig.from_env`) and these arguments."""
    overrides = dict(config)
    if models:
        overrides["models"] = [str(m) for m in models]
    if data is not None:
        overrides["data"] = str(data)
    return Express4DSpace(SpaceConfig.from_env(**overrides))


__all__ = ["EXAMPLE_PROMPTS", "Express4DSpace", "SpaceConfig", "SpaceError", "build_app", "credits_markdown",
           "discover_models"]  # fmt: skip
