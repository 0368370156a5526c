"""``express4d benchmark``: the whole Express4D experiment in one command.

Stages: build dataset -> train evaluator -> train MDM -> train T2M-GPT -> evaluate every row -> reports.
Each stage writes ``stage.json`` (its config and the data fingerprint) when it finishes; a re-run skips a
stage whose output exists and whose ``stage.json`` matches, so an interrupted benchmark resumes where it
stopped. A stage failure raises :class:`BenchmarkStageError` naming the stage and keeps what was done.

Rows: Real (test clips), Text-blind control, Noise reference, MDM (fast sampler), MDM (full 1000-step
DDPM; ``paper`` preset, optional in ``tiny``), T2M-GPT, and the order-aware variants of both baselines
(``mdm-order``, ``t2m-gpt-order``: the same classes attending to the text's token states). Two more rows check
that the evaluator notices the order of a multi-step instruction: Real on the multi-step test captions and the
order-swapped control (the same clips scored against their captions with the steps swapped;
``express4d_hf.evaluation.order``). Every generator row also gets an order accuracy: the share of the 28 two-step
probe instructions whose steps it plays in the right order, with a bootstrap 95% interval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable


from ..core.constants import EVAL_GROUP_SIZE, RECOMMENDED_GUIDANCE_RESCALE, TRAIN_FPS
from ..core.motion import FaceMotion
from ..core.io import atomic_write_text
from ..livelink import write_livelink_csv

logger = logging.getLogger(__name__)

ROW_TITLES = {
    "real": "Real (test clips)",
    "text_blind": "Text-blind control",
    "noise": "Noise reference",
    "mdm_fast": "MDM (fast sampler)",
    "mdm_ddpm_full": "MDM (DDPM, 1000 steps)",
    "t2m_gpt": "T2M-GPT",
    "mdm_order_fast": "MDM order-aware (fast sampler)",
    "mdm_order_ddpm_full": "MDM order-aware (DDPM, 1000 steps)",
    "t2m_gpt_order": "T2M-GPT order-aware",
    "real_multi_step": "Real (multi-step subset)",
    "order_swapped": "Order-swapped control (multi-step subset)",
}
ALL_MODELS = ("mdm", "t2m-gpt", "mdm-order", "t2m-gpt-order")
ORDER_COLUMN = "Order acc. ↑"


@dataclass
class BenchmarkConfig:
    """What one benchmark run does; the preset fills the defaults."""

    preset: str = "tiny"  # "tiny" (2-core CPU, <= 15 min) or "paper" (the official protocol, one GPU)
    replications: int = 5  # protocol replications (the paper uses 20)
    max_test_clips: int | None = 128  # test subset in whole groups of 32 (None = whole test split)
    models: tuple[str, ...] = ALL_MODELS  # baselines to train and score
    fast_sampler: str = "ddim"  # "ddim", "dpmsolver++" or "sde-dpmsolver++" for the fast MDM row
    fast_steps: int = 50  # denoising steps of the fast MDM row
    fast_eta: float = 0.0  # DDIM's per-step noise share in the fast row (0 = deterministic DDIM)
    fast_guidance_rescale: float = 0.0  # guidance rescale of the fast row (pipeline's guidance_rescale)
    guidance_scale: float = 2.5  # classifier-free guidance of the MDM rows
    fast_sampling: bool = True  # on a GPU, sample MDM with a bf16 denoiser and replayed CUDA graphs
    full_ddpm: bool = False  # add the 1000-step DDPM row of the paper-faithful MDM (always on in the paper preset)
    full_ddpm_order: bool = False  # that row for the order-aware MDM too (~4.5 min more on one H200 at paper size)
    multimodality: bool = False  # also compute Multimodality (extra generations)
    num_samples: int = 4  # generated clips per model saved under samples/
    seed: int = 0  # seeds every stage
    max_steps: dict[str, int] = field(default_factory=dict)  # per-stage step overrides (evaluator, mdm, vqvae, gpt)
    evaluator: str | None = None  # score the rows with this evaluator folder (e.g. a converted official one)
    concurrent: bool = True  # on a GPU, the trainings run at once, one process each (each with its own seed)
    mps: bool = True  # those processes share each GPU through a private CUDA MPS daemon (kernels overlap), when it starts
    gpus: int = 1  # spread the trainings over this many GPUs (evaluator, MDM, T2M-GPT on GPU 0, 1, 2 modulo N)
    compare_samplers: tuple[str, ...] = ()  # more MDM rows, "sampler:steps", with the fast row's guidance and rescale
    ddpm_multimodality: bool = False  # Multimodality for the 1000-step DDPM row too (about 27 min alone on one H200)
    select_checkpoints: bool = False  # score kept checkpoints on the validation split, test rows use the chosen one (paper: on)
    selection_points: int = 10  # weights kept per generator training for selection (evenly spaced, the last included)
    selection_replications: int = 3  # protocol replications per checkpoint on the validation clips
    selection_max_clips: int | None = None  # validation subset in whole groups of 32 (None: all, 128 of the corpus's 145)

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> BenchmarkConfig:
        if name == "tiny":
            base = cls()
        elif name == "paper":
            base = cls(preset="paper", replications=20, max_test_clips=None, full_ddpm=True, multimodality=True,
                       fast_guidance_rescale=RECOMMENDED_GUIDANCE_RESCALE, compare_samplers=("dpmsolver++:12",),
                       select_checkpoints=True)  # fmt: skip
        else:
            raise ValueError(f"unknown preset {name!r}; choose 'tiny' or 'paper'")
        for key, value in overrides.items():
            if value is not None:
                setattr(base, key, value)
        return base


class BenchmarkInterrupted(KeyboardInterrupt):
    """SIGTERM reached the benchmark outside a training step; what was finished is kept."""


class BenchmarkStageError(RuntimeError):
    """A stage failed; what earlier stages wrote is kept so that ``--resume`` continues from there."""


def _stage_key(stage: str, config: dict[str, Any], fingerprint: str) -> str:
    blob = json.dumps({"stage": stage, "config": config, "data": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stage_done(folder: Path, key: str) -> bool:
    marker = folder / "stage.json"
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def _unsound_output(name: str, folder: Path) -> str | None:
    """Why a finished stage's output cannot be used (it is then set aside and trained again), or None. A T2M-GPT
    stage whose tokenizer learnt nothing (e.g. trained by a version with the compiled-quantizer bug) is unsound."""
    if not name.startswith("t2m_gpt"):
        return None
    from ..training.t2m_gpt import tokenizer_failure

    try:
        return tokenizer_failure(json.loads((folder / "training_metadata.json").read_text()).get("reconstruction_test"))
    except (OSError, json.JSONDecodeError):
        return None


def _mark_done(folder: Path, stage: str, key: str, config: dict[str, Any], seconds: float) -> None:
    atomic_write_text(folder / "stage.json", json.dumps({"stage": stage, "key": key, "config": config, "seconds": seconds}, indent=2, default=str))


def _run_stage(name: str, folder: Path, config: dict[str, Any], fingerprint: str, fn: Callable[[], Any], resume: bool) -> float:
    """Run ``fn`` unless ``folder`` already holds this stage's output for the same config and data; the seconds
    spent training (0.0 when skipped). The time it trained, finished or not, goes to the active ledger."""
    key = _stage_key(name, config, fingerprint)
    if resume and _stage_done(folder, key):
        why = _unsound_output(name, folder)
        if why is None:
            logger.info("[%s] up to date in %s, skipped", name, folder)
            return 0.0
        aside = folder.with_name(f"{folder.name}.unsound-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(aside)  # kept, not deleted; its checkpoints would otherwise "resume" the finished run
        logger.warning("[%s] %s: the finished stage was moved to %s and is trained again", name, why, aside)
    t0, start = time.perf_counter(), time.time()
    if (folder / "stage.json").exists():
        (folder / "stage.json").unlink()  # a different config: its output is stale
    logger.info("[%s] running -> %s", name, folder)
    try:
        fn()
    except KeyboardInterrupt:
        raise
    except Exception as err:
        raise BenchmarkStageError(
            f"stage '{name}' failed: {type(err).__name__}: {err}. Earlier stages are kept; fix the cause and re-run "
            "the same command to resume."
        ) from err
    finally:
        TimingLedger.record_stage(name, start, time.time())
    seconds = time.perf_counter() - t0
    _mark_done(folder, name, key, config, seconds)
    return seconds


class TimingLedger:
    """Wall times of every invocation of one benchmark folder (``timings.json``), so that a run spread over
    several shorter jobs (each resuming the last) reports what the whole run took.

    Per invocation it records each training stage's own seconds (``stages``: only stages that trained in it;
    one skipped as up to date adds nothing), the span from the first training's start to the last one's end
    (``train_wall_s``, stages overlapping or not), the seconds of each phase (``phases``: data, train_phase,
    evaluate, reports) and its wall time (``total_s``) and ``status``. :meth:`totals` adds them up over invocations; that
    is what ``results.json`` reports. The file is rewritten at every stage and phase boundary (status
    ``"running"``), so an invocation killed outright (SIGKILL, a lost machine) still counts up to its last
    boundary and is marked ``"killed"`` by the next one; SIGTERM (``timeout``) closes it as ``"interrupted"``.
    """

    active: TimingLedger | None = None  # the ledger of the benchmark running in this process (see record_stage)

    def __init__(self, out: Path, clock: Callable[[], float] = time.time):
        self.path = out / "timings.json"
        self.clock = clock
        try:
            self.invocations: list[dict[str, Any]] = json.loads(self.path.read_text())["invocations"]
        except (OSError, json.JSONDecodeError, KeyError):
            self.invocations = []
        for invocation in self.invocations:
            if invocation.get("status") == "running":  # its process never closed it
                invocation["status"] = "killed"
        self.started = clock()
        self.current: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stages": {},
                                        "phases": {}}  # fmt: skip
        self._phase: tuple[str, float] | None = None  # the open phase and its start

    def stage(self, name: str, start: float, end: float) -> None:
        """Training stage ``name`` trained from ``start`` to ``end`` (``clock`` seconds) in this invocation."""
        self.current["stages"][name] = round(self.current["stages"].get(name, 0.0) + end - start, 3)
        first, last = self.current.get("train_start"), self.current.get("train_end")
        self.current["train_start"] = start if first is None else min(first, start)
        self.current["train_end"] = end if last is None else max(last, end)
        self.current["train_wall_s"] = round(self.current["train_end"] - self.current["train_start"], 3)
        self.save()

    @classmethod
    def record_stage(cls, name: str, start: float, end: float) -> None:
        """:meth:`stage` on the active ledger, if a benchmark runs in this process (a training in a worker
        process reports to its parent instead)."""
        if cls.active is not None:
            cls.active.stage(name, start, end)

    def phase(self, name: str | None) -> None:
        """Close the open phase (its seconds added to ``phases``) and open ``name`` (None: none)."""
        now = self.clock()
        if self._phase is not None:
            opened, since = self._phase
            self.current["phases"][opened] = round(self.current["phases"].get(opened, 0.0) + now - since, 3)
        self._phase = (name, now) if name is not None else None
        self.save()

    def _snapshot(self, status: str) -> dict[str, Any]:
        now = self.clock()
        phases = dict(self.current["phases"])
        if self._phase is not None:  # the open phase so far
            phases[self._phase[0]] = round(phases.get(self._phase[0], 0.0) + now - self._phase[1], 3)
        return {**self.current, "phases": phases, "total_s": round(now - self.started, 3), "status": status}

    def save(self, status: str = "running") -> None:
        every = self.invocations + [self._snapshot(status)]
        atomic_write_text(self.path, json.dumps({"invocations": every}, indent=2) + "\n")

    def close(self, status: str) -> None:
        self.phase(None)
        self.save(status)

    def totals(self) -> dict[str, Any]:
        """Seconds added up over every invocation so far, this one included (up to now): ``train_<stage>_s``
        (over the invocations that trained it), ``<phase>_s``, ``train_wall_s``, ``total_s``, ``invocations``."""
        every = self.invocations + [self._snapshot("running")]
        stages: dict[str, float] = {}
        phases: dict[str, float] = {}
        for invocation in every:
            for name, seconds in invocation.get("stages", {}).items():
                stages[name] = stages.get(name, 0.0) + seconds
            for name, seconds in invocation.get("phases", {}).items():
                phases[name] = phases.get(name, 0.0) + seconds
        return {**{f"{k}_s": round(v, 1) for k, v in phases.items()},
                **{f"train_{k}_s": round(v, 1) for k, v in stages.items()},
                "train_wall_s": round(sum(i.get("train_wall_s", 0.0) for i in every), 1),
                "total_s": round(sum(i.get("total_s", 0.0) for i in every), 1), "invocations": len(every)}  # fmt: skip

    def ledger(self) -> list[dict[str, Any]]:
        """Every invocation so far (this one up to now), for ``results.json``: start, status, seconds."""
        keep = ("started", "status", "total_s", "train_wall_s", "stages", "phases", "concurrency")
        return [{k: i[k] for k in keep if k in i} for i in self.invocations + [self._snapshot("running")]]


def _mdm_configs(config, model_preset: str | None = None) -> dict[str, Any]:
    """The MDM stage's ``{"mdm": MDMTrainConfig}`` (``model_preset``: e.g. the order-aware ``<preset>_order``)."""
    from ..training.mdm import MDMTrainConfig

    preset = {"model_preset": model_preset} if model_preset else {}
    return {"mdm": _selectable(config, MDMTrainConfig.preset(config.preset, seed=config.seed, **preset, **_steps(config.max_steps, "mdm")))}


def _t2m_gpt_configs(config, model_preset: str | None = None) -> dict[str, Any]:
    """A T2M-GPT stage's ``{"vqvae", "gpt"}`` configs (``model_preset``: the GPT's, e.g. ``<preset>_order``)."""
    from ..training.t2m_gpt import GPTTrainConfig, VQVAETrainConfig

    steps, preset = config.max_steps, {"model_preset": model_preset} if model_preset else {}
    return {"vqvae": _selectable(config, VQVAETrainConfig.preset(config.preset, seed=config.seed, **_steps(steps, "vqvae"))),
            "gpt": _selectable(config, GPTTrainConfig.preset(config.preset, seed=config.seed, **preset, **_steps(steps, "gpt")))}  # fmt: skip


def _stage_jobs(config, data_dir, evaluator_dir, mdm_dir, t2m_dir, mdm_order_dir=None) -> list[tuple[str, Path, dict[str, Any]]]:
    """``(name, folder, configs)`` of each training stage that depends on no other: the evaluator, the baselines
    and the order-aware MDM (the order-aware T2M-GPT waits for the pooled run's tokenizer)."""
    from ..training.evaluator import EvaluatorTrainConfig

    jobs = [("evaluator", evaluator_dir, {"evaluator": EvaluatorTrainConfig.preset(config.preset, seed=config.seed, **_steps(config.max_steps, "evaluator"))})]
    if "mdm" in config.models:
        jobs.append(("mdm", mdm_dir, _mdm_configs(config)))
    if "t2m-gpt" in config.models:
        jobs.append(("t2m_gpt", t2m_dir, _t2m_gpt_configs(config)))
    if "mdm-order" in config.models and mdm_order_dir is not None:
        jobs.append(("mdm_order", mdm_order_dir, _mdm_configs(config, f"{config.preset}_order")))
    return jobs


def _stage_key_config(name: str, configs: dict[str, Any]) -> dict[str, Any]:
    key = asdict(next(iter(configs.values()))) if len(configs) == 1 else {k: asdict(v) for k, v in configs.items()}
    if name == "mdm_order":
        from ..models.mdm import MDM_PRESETS

        # The preset's architecture is part of the stage's identity: a folder trained before the order-aware
        # preset changed (text_attention) is retrained, not reused under the same preset name.
        key["denoiser"] = dict(MDM_PRESETS[configs["mdm"].model_preset])
    return key


def _train_job(name: str, folder: Path, configs: dict[str, Any], data_dir, fingerprint: str, resume: bool, progress: bool) -> float:
    if name == "evaluator":
        from ..training.evaluator import train_evaluator

        fn = lambda: train_evaluator(data_dir, folder, configs["evaluator"], progress=progress, resume=resume)  # noqa: E731
    elif name in ("mdm", "mdm_order"):
        from ..training.mdm import train_mdm

        fn = lambda: train_mdm(data_dir, folder, configs["mdm"], progress=progress, resume=resume)  # noqa: E731
    else:
        from ..training.t2m_gpt import train_t2m_gpt

        fn = lambda: train_t2m_gpt(data_dir, folder, configs["vqvae"], configs["gpt"], progress=progress, resume=resume)  # noqa: E731
    return _run_stage(name, folder, _stage_key_config(name, configs), fingerprint, fn, resume)


def _train_process(name, folder, configs, data_dir, fingerprint, resume, env, queue) -> None:
    """One training stage in its own process; ``env`` is set before CUDA starts (``--gpus``: the GPU it is
    pinned to; MPS: the daemon's pipe)."""
    os.environ.update(env)
    start = time.time()
    try:
        trained = _train_job(name, Path(folder), configs, data_dir, fingerprint, resume, progress=False) > 0
        queue.put((name, start, time.time(), None, trained))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        queue.put((name, start, time.time(), f"{type(err).__name__}: {err}", True))


def _train_stages_concurrently(jobs, data_dir, fingerprint, resume, gpus: int, ledger: TimingLedger, mps: bool = True) -> None:
    """Every training stage at once, one process each (spawned: CUDA needs a fresh process); stage ``i`` on GPU
    ``i % gpus`` when ``gpus > 1``. With ``mps`` the processes join a private CUDA MPS daemon, so their kernels
    overlap instead of taking turns; when it cannot start they run without it (said on stderr and in
    timings.json). A failure in one stage lets the others finish and then raises."""
    from ..training.gpu_sharing import mps_client_env

    with mps_client_env(mps) as (env, error):
        concurrency: dict[str, Any] = {"processes": len(jobs), "gpus": gpus, "mps": bool(env)}
        if error:
            concurrency["mps_error"] = error
            print(f"express4d benchmark: the trainings share the GPU without MPS ({error})", file=sys.stderr)
        logger.info("training %s at once, one process each%s", ", ".join(name for name, _, _ in jobs), " (CUDA MPS)" if env else "")
        ledger.current["concurrency"] = concurrency
        _run_training_processes(jobs, data_dir, fingerprint, resume, gpus, ledger, env)


def _run_training_processes(jobs, data_dir, fingerprint, resume, gpus: int, ledger: TimingLedger, env: dict[str, str]) -> None:
    import multiprocessing

    from ..training.gpu_sharing import worker_env

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = []
    for i, (name, folder, configs) in enumerate(jobs):
        process = context.Process(target=_train_process, args=(name, str(folder), configs, str(data_dir), fingerprint, resume, worker_env(env, i, gpus), queue),
                                  name=f"express4d-train-{name}")  # fmt: skip
        process.start()
        processes.append(process)
    errors = []
    try:
        for _ in processes:
            name, start, end, error, trained = queue.get()
            if trained:  # (a stage skipped as up to date adds nothing)
                ledger.stage(name, start, end)
            if error:
                errors.append(f"{name}: {error}")
    finally:
        for process in processes:
            process.join()
        while True:  # stages that reported after an interruption (SIGTERM) still count
            try:
                name, start, end, error, trained = queue.get(timeout=0.5)
            except Exception:  # noqa: BLE001 - queue.Empty
                break
            if trained:
                ledger.stage(name, start, end)
    if errors:
        raise BenchmarkStageError("training failed: " + "; ".join(errors) + ". Finished stages are kept; re-run the same command to resume.")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_benchmark(
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs/benchmark",
    config: BenchmarkConfig | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage and write ``results.json``, ``results.md``, ``metrics.png`` and ``samples/`` in ``out_dir``.

    SIGTERM (``timeout``) stops it cleanly: a training saves a checkpoint at its next step, the invocation's
    time goes into ``timings.json``, and the same call resumes later.
    """
    config = config or BenchmarkConfig.preset_config("tiny")
    unknown = set(config.models) - set(ALL_MODELS)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; choose from {', '.join(ALL_MODELS)}")
    if config.fast_eta and config.fast_sampler != "ddim":
        raise ValueError(f"eta {config.fast_eta:g} applies to the ddim sampler, not {config.fast_sampler}; use --sampler ddim")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = TimingLedger.active = TimingLedger(out)
    status = "interrupted"
    previous = None
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():

        def stop(signum, frame):  # noqa: ARG001
            raise BenchmarkInterrupted("SIGTERM: stopped; re-run the same command to resume")

        previous = signal.signal(signal.SIGTERM, stop)
    try:
        report = _run_benchmark(data, out, config, resume, progress, ledger)
        status = "finished"
        return report
    finally:
        ledger.close(status)
        TimingLedger.active = None
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_benchmark(data, out: Path, config: BenchmarkConfig, resume: bool, progress: bool, ledger: TimingLedger) -> dict[str, Any]:
    from ..data.hub import dataset_fingerprint, dataset_stats, load_express4d, resolve_dataset_dir
    from ..evaluation.protocol import (
        EvaluationResult,
        evaluate_generator,
        evaluator_fingerprint,
        evaluate_real,
        noise_generator,
        text_blind_generator,
    )
    from ..evaluation.report import write_results
    from ..evaluation.scoring import Sampling, pipeline_generate_fn, score_pipeline, test_subset
    from ..training.common import run_metadata

    started = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. data
    ledger.phase("data")
    t0 = time.perf_counter()
    data_dir = resolve_dataset_dir(data, progress=progress)
    fingerprint = dataset_fingerprint(data_dir)
    splits = load_express4d(data_dir, progress=progress)
    stats = dataset_stats(data_dir)
    timings["data_s"] = time.perf_counter() - t0

    # 2-4. training stages
    evaluator_dir, mdm_dir, t2m_dir = out / "evaluator", out / "mdm", out / "t2m_gpt"
    mdm_order_dir, t2m_order_dir = out / "mdm_order", out / "t2m_gpt_order"
    ledger.phase("train_phase")  # every training's own seconds go to the ledger (results.json: train_<stage>_s)
    _train_stages(config, data_dir, fingerprint, evaluator_dir, mdm_dir, t2m_dir, resume, progress, ledger, mdm_order_dir)
    _train_order_gpt(config, data_dir, fingerprint, t2m_order_dir, t2m_dir, resume, progress)

    # 5. rows
    ledger.phase("evaluate")
    from ..models.evaluator import TextMotionEvaluator, describe_evaluator

    # The trained evaluator selects checkpoints during training; --evaluator DIR (e.g. `express4d convert
    # official-evaluator`) scores the rows instead, and the results say which one did.
    scoring_dir = Path(config.evaluator).expanduser() if config.evaluator else evaluator_dir
    evaluator = TextMotionEvaluator.from_pretrained(scoring_dir)
    evaluator_info = {"path": str(scoring_dir), "class": type(evaluator).__name__,
                      "description": describe_evaluator(evaluator)}  # fmt: skip
    test_clips = _clips(splits["test"])
    train_clips = _clips(splits["train"])
    clips = test_subset(test_clips, config.max_test_clips, EVAL_GROUP_SIZE)
    selections: dict[str, dict[str, Any]] = {}  # row -> its checkpoint selection record
    selected_steps: dict[str, int] = {}  # every row scored with a selected checkpoint -> its step
    selection_clips = _selection_clips(splits, test_clips, config) if config.select_checkpoints else None
    protocol = dict(replications=config.replications, seed=config.seed, progress=progress)
    rows_dir = out / "rows"
    rows_dir.mkdir(exist_ok=True)
    row_key_base = {"clips": len(clips), "replications": config.replications, "seed": config.seed,
                    "eval": "given" if config.evaluator else _folder_key(evaluator_dir)}  # fmt: skip

    def row(name: str, make: Callable[[], EvaluationResult], extra_key: dict | None = None) -> EvaluationResult:
        path = rows_dir / f"{name}.json"
        if "selected_step" in (extra_key or {}):  # results.json says which checkpoint each generator row scored
            selected_steps[name] = extra_key["selected_step"]
        key = _stage_key(name, {**row_key_base, **(extra_key or {})}, fingerprint)
        if resume and path.exists() and _stage_done(rows_dir / name, key):
            return EvaluationResult.load_json(path)
        logger.info("[evaluate] %s", ROW_TITLES[name])
        t1 = time.perf_counter()
        try:
            result = make()
        except Exception as err:
            raise BenchmarkStageError(f"evaluating row '{name}' failed: {type(err).__name__}: {err}") from err
        result.save_json(path)
        (rows_dir / name).mkdir(exist_ok=True)
        _mark_done(rows_dir / name, name, key, {}, time.perf_counter() - t1)
        return result

    mm = dict(multimodality=config.multimodality)
    row_key_base["evaluator"] = evaluator_info["fingerprint"] = evaluator_fingerprint(evaluator)
    results: dict[str, EvaluationResult] = {}
    results["real"] = row("real", lambda: evaluate_real(clips, evaluator, **protocol))
    results["text_blind"] = row("text_blind", lambda: evaluate_generator(text_blind_generator(train_clips, seed=config.seed), clips, evaluator, **protocol, **mm))
    results["noise"] = row("noise", lambda: evaluate_generator(noise_generator(stats.mean, stats.std, seed=config.seed), clips, evaluator, **protocol, **mm))
    results.update(_order_swapped_rows(row, test_clips, evaluator, protocol, config))
    pipelines: dict[str, Any] = {}
    generators: dict[str, Callable] = {  # what the order probe calls, per row
        "text_blind": text_blind_generator(train_clips, seed=config.seed),
        "noise": noise_generator(stats.mean, stats.std, seed=config.seed),
    }
    mdm_sampling = None
    protocol["multimodality"] = config.multimodality
    for model, folder, fast_name, full_name in (("mdm", mdm_dir, "mdm_fast", "mdm_ddpm_full"),
                                                ("mdm-order", mdm_order_dir, "mdm_order_fast", "mdm_order_ddpm_full")):  # fmt: skip
        if model not in config.models:
            continue
        from ..pipelines.mdm import Express4DMDMPipeline

        mdm = Express4DMDMPipeline.from_pretrained(folder).to(_device())
        fast = Sampling(sampler=config.fast_sampler, steps=config.fast_steps, guidance_scale=config.guidance_scale,
                        guidance_rescale=config.fast_guidance_rescale, eta=config.fast_eta,
                        fast_sampling=config.fast_sampling)  # fmt: skip
        fast_kwargs = fast.prepare(mdm)  # casts and records on a GPU before the rows are keyed by dtype
        if selection_clips is not None:  # the test rows score the checkpoint chosen on validation
            selections[fast_name] = _select(fast_name, mdm, folder, evaluator, selection_clips, fast, config, progress)
        chosen = {"selected_step": selections[fast_name]["selected_step"]} if fast_name in selections else {}
        mdm_sampling = (f"{str(mdm.denoiser.dtype).removeprefix('torch.')} denoiser"
                        + (", deterministic samplers replayed as CUDA graphs" if config.fast_sampling and _device() == "cuda" else ", eager"))  # fmt: skip
        mdm_key = {"model": _folder_key(folder), **fast.describe(), "dtype": str(mdm.denoiser.dtype), **chosen}
        results[fast_name] = row(fast_name, lambda mdm=mdm, fast=fast: score_pipeline(mdm, evaluator, clips, fast, **protocol), mdm_key)
        if scores_full_ddpm(config, model):
            full = Sampling(sampler="ddpm", guidance_scale=config.guidance_scale, fast_sampling=config.fast_sampling)
            full_key = {"model": _folder_key(folder), **full.describe(), "dtype": str(mdm.denoiser.dtype), **chosen}
            full_protocol = {**protocol, "multimodality": config.multimodality and config.ddpm_multimodality}
            results[full_name] = row(full_name, lambda mdm=mdm, full=full: score_pipeline(mdm, evaluator, clips, full, **full_protocol), full_key)
        for spec in config.compare_samplers if model == "mdm" else ():
            sampler, _, count = spec.partition(":")
            other = Sampling(sampler=sampler, steps=int(count or 50), guidance_scale=config.guidance_scale,
                             guidance_rescale=config.fast_guidance_rescale, fast_sampling=config.fast_sampling)  # fmt: skip
            name = sampler_row_name(sampler, int(count or 50))
            ROW_TITLES.setdefault(name, f"MDM ({sampler}, {int(count or 50)} steps" + (
                f", rescale {config.fast_guidance_rescale:g})" if config.fast_guidance_rescale else ")"))
            other.prepare(mdm)
            key = {"model": _folder_key(folder), **other.describe(), "dtype": str(mdm.denoiser.dtype), **chosen}
            results[name] = row(name, lambda mdm=mdm, other=other: score_pipeline(mdm, evaluator, clips, other, **protocol), key)
        fast_kwargs = fast.prepare(mdm)
        mdm.set_progress_bar_config(disable=True)
        pipelines[fast_name] = (mdm, fast_kwargs)
        generators[fast_name] = pipeline_generate_fn(mdm, **fast_kwargs)
    for model, folder, name in (("t2m-gpt", t2m_dir, "t2m_gpt"), ("t2m-gpt-order", t2m_order_dir, "t2m_gpt_order")):
        if model not in config.models:
            continue
        from ..pipelines.t2m_gpt import Express4DT2MGPTPipeline

        gpt = Express4DT2MGPTPipeline.from_pretrained(folder).to(_device())
        if selection_clips is not None:
            selections[name] = _select(name, gpt, folder, evaluator, selection_clips, None, config, progress)
        chosen = {"selected_step": selections[name]["selected_step"]} if name in selections else {}
        results[name] = row(name, lambda gpt=gpt: score_pipeline(gpt, evaluator, clips, None, **protocol), {"model": _folder_key(folder), **chosen})
        gpt.set_progress_bar_config(disable=True)
        pipelines[name] = (gpt, {})
        generators[name] = pipeline_generate_fn(gpt)
    order_results = _order_probes(rows_dir, generators, results, row_key_base, fingerprint, config, resume)
    timings["rows_s"] = sum(r.timings.get("total_s", 0.0) for r in results.values())  # each row's own scoring

    # 6. reports
    ledger.phase("reports")
    _write_samples(out / "samples", pipelines, clips, config)
    accumulated = ledger.totals()
    meta = run_metadata(
        asdict(config), seeds={"benchmark": config.seed}, data={"path": str(data_dir), "fingerprint": fingerprint,
        "test_clips_used": len(clips), "test_clips_total": len(test_clips), "train_clips": len(train_clips)},
        timings={**timings, **accumulated, "this_invocation_s": time.perf_counter() - started,
                 "ledger": ledger.ledger()},
        steps_run=_steps_run(out), protocol=results["real"].info,
        mdm_sampling=mdm_sampling, evaluator=evaluator_info,
    )  # fmt: skip
    if config.select_checkpoints:
        meta["checkpoint_selection"] = selections
        if selections:
            from ..evaluation.selection import plot_validation

            plot_validation(selections, out / "validation.png", ROW_TITLES)
    notes = _results_notes(meta, config, len(clips)) + _selection_notes(selections) + _tokenizer_notes(out)
    order_cells = {ROW_TITLES[n]: order_results[n].cell() for n in order_results}
    report = write_results(out, results, ROW_TITLES, meta, f"Express4D benchmark ({config.preset} preset)", notes,
                           extra_columns={ORDER_COLUMN: order_cells},
                           row_extras={n: {**({"order_accuracy": order_results[n].to_dict()} if n in order_results else {}),
                                           **({"selected_step": selected_steps[n]} if n in selected_steps else {})}
                                       for n in results})  # fmt: skip
    return report


def _train_stages(config, data_dir, fingerprint, evaluator_dir, mdm_dir, t2m_dir, resume, progress,
                  ledger: TimingLedger | None = None, mdm_order_dir: Path | None = None) -> dict[str, float]:  # fmt: skip
    """Train the evaluator, the baselines and the order-aware MDM: at once on a GPU (``config.concurrent``, or
    over ``config.gpus`` GPUs; under MPS with ``config.mps``), one after the other otherwise. Returns each
    stage's seconds in this invocation."""
    ledger = ledger or TimingLedger(Path(evaluator_dir).parent)
    jobs = _stage_jobs(config, data_dir, evaluator_dir, mdm_dir, t2m_dir, mdm_order_dir)
    if (config.concurrent or config.gpus > 1) and _device() == "cuda" and len(jobs) > 1:
        _train_stages_concurrently(jobs, data_dir, fingerprint, resume, max(1, config.gpus), ledger, config.mps)
    else:  # each stage's time goes to the active ledger (_run_stage)
        for name, folder, configs in jobs:
            _train_job(name, folder, configs, data_dir, fingerprint, resume, progress)
    return {f"train_{name}_s": ledger.current["stages"].get(name, 0.0) for name, _, _ in jobs}


def scores_full_ddpm(config: BenchmarkConfig, model: str) -> bool:
    """Whether ``model`` gets the 1000-step DDPM row: the official sampler's reference for the paper-faithful MDM;
    for the order-aware MDM only on request (at paper size the row alone is ~4.5 min of one H200)."""
    return config.full_ddpm and (model == "mdm" or config.full_ddpm_order)


def sampler_row_name(sampler: str, steps: int) -> str:
    return f"mdm_{sampler.replace('++', 'pp').replace('-', '_')}_{steps}"


def _steps_run(out: Path) -> dict[str, Any]:
    """The steps each training actually ran and how (from the trainers' metadata), for results.json."""
    found: dict[str, Any] = {}
    try:
        metrics = json.loads((out / "evaluator" / "metrics.json").read_text())
        found["evaluator"] = {k: v.get("steps") for k, v in metrics.get("execution", {}).items()}
        found["evaluator_execution"] = metrics.get("execution")
    except (OSError, json.JSONDecodeError):
        pass
    for name in ("mdm", "t2m_gpt", "mdm_order", "t2m_gpt_order"):
        folder = out / name
        try:
            meta = json.loads((folder / "training_metadata.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        found[name] = {k: meta.get(k) for k in ("steps", "gpt_steps", "execution", "loop_seconds_all_runs") if k in meta}
    return found


def _train_order_gpt(config, data_dir, fingerprint, t2m_dir, pooled_t2m_dir, resume, progress) -> None:
    """The order-aware T2M-GPT (the same trainer and recipe with the ``<preset>_order`` GPT preset), after the
    other trainings: it reuses the pooled run's VQ-VAE when that runs too (same codes, only the GPT differs). The
    order-aware MDM trains with the others (``_stage_jobs``)."""
    if "t2m-gpt-order" not in config.models:
        return
    from ..training.t2m_gpt import VQVAE_STAGE_DIR, train_t2m_gpt

    configs = _t2m_gpt_configs(config, f"{config.preset}_order")
    vq_cfg, gpt_cfg = configs["vqvae"], configs["gpt"]
    shared = pooled_t2m_dir / VQVAE_STAGE_DIR if "t2m-gpt" in config.models else None
    stage_config = {"vqvae": asdict(vq_cfg), "gpt": asdict(gpt_cfg), "vqvae_shared": shared is not None}
    _run_stage("t2m_gpt_order", t2m_dir, stage_config, fingerprint,  # its seconds go to the active ledger
        lambda: train_t2m_gpt(data_dir, t2m_dir, vq_cfg, gpt_cfg, vqvae_dir=shared, progress=progress, resume=resume), resume)  # fmt: skip


def _order_swapped_rows(row, test_clips, evaluator, protocol, config) -> dict[str, Any]:
    """Real on the multi-step test captions and the order-swapped control on the same clips (skipped, with a
    log line, when the test split has fewer than one group of multi-step clips)."""
    from ..evaluation.order import evaluate_order_swapped, multi_step_subset

    try:
        subset = multi_step_subset(test_clips, EVAL_GROUP_SIZE, config.max_test_clips)
    except ValueError as err:
        logger.warning("order-swapped control skipped: %s", err)
        return {}
    pair: dict[str, Any] = {}
    real_protocol = {k: v for k, v in protocol.items() if k in ("replications", "seed", "progress")}

    def both():
        if not pair:
            pair["real"], pair["swapped"] = evaluate_order_swapped(subset, evaluator, **real_protocol)
        return pair

    key = {"subset": len(subset), "rule": "swap_steps v1"}
    return {"real_multi_step": row("real_multi_step", lambda: both()["real"], key),
            "order_swapped": row("order_swapped", lambda: both()["swapped"], key)}  # fmt: skip


def _order_probes(rows_dir: Path, generators: dict[str, Callable], results: dict[str, Any], key_base: dict,
                  fingerprint: str, config: BenchmarkConfig, resume: bool) -> dict[str, Any]:  # fmt: skip
    """Order accuracy (``evaluation.order.order_probe``) of every row that has a generator, plus the Real row's
    reference: the probes played by the corpus's synthesiser (what following the order scores)."""
    from ..evaluation.order import OrderProbeResult, order_probe, reference_generator

    out: dict[str, Any] = {}
    candidates = {"real": reference_generator(config.seed), **generators}
    for name, generate in candidates.items():
        if name not in results:
            continue
        path = rows_dir / f"{name}.order.json"
        key = _stage_key(f"{name}.order", {**key_base, "row": _folder_key(rows_dir / name)}, fingerprint)
        if resume and path.exists():
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                out[name] = OrderProbeResult.from_dict(saved["result"])
                continue
        logger.info("[order probe] %s", ROW_TITLES[name])
        result = order_probe(generate, seed=config.seed)
        if name == "real":
            result.info["generator"] = "the procedural corpus's synthesiser playing each probe's two steps"
        atomic_write_text(path, json.dumps({"key": key, "result": result.to_dict()}, indent=2) + "\n")
        out[name] = result
    return out


def _validation_fraction(config: BenchmarkConfig) -> float:
    """The share of train the evaluator holds out for validation: the generators hold out the same clips."""
    from ..training.evaluator import EvaluatorTrainConfig

    return EvaluatorTrainConfig.preset(config.preset, seed=config.seed).val_fraction


def _selectable(config: BenchmarkConfig, stage_config: Any) -> Any:
    """With ``select_checkpoints``: a training config that holds the validation clips out of training and keeps
    ``selection_points`` evenly spaced weight files to select from (a generator's by the evaluator's scores, the
    VQ-VAE's by its reconstruction of the validation clips: ``training.t2m_gpt.select_tokenizer_weights``)."""
    if not config.select_checkpoints:
        return stage_config
    from dataclasses import replace

    every = -(-stage_config.max_steps // max(1, config.selection_points))
    return replace(stage_config, validation_holdout=_validation_fraction(config), keep_weights_every=every)


def _selection_clips(splits, test_clips, config: BenchmarkConfig) -> list[FaceMotion]:
    """The validation clips checkpoints are selected on (never a test clip: checked by take id)."""
    from ..evaluation.selection import validation_clips

    chosen = validation_clips(splits, _validation_fraction(config), config.seed, config.selection_max_clips)
    leaked = {c.metadata["id"] for c in chosen} & {c.metadata["id"] for c in test_clips}
    if leaked:
        raise BenchmarkStageError(f"checkpoint selection would score test clips {sorted(leaked)[:5]}: refusing")
    return chosen


def _selection_notes(selections: dict[str, dict[str, Any]]) -> str:
    if not selections:
        return ""
    first = next(iter(selections.values()))
    lines = [f"\nCheckpoint selection (validation.png): each generator's kept checkpoints scored on "
             f"{first['validation']['clips']} validation clips (held out of every training; never test clips), "
             f"{first['replications']} replications, the row's own sampler; criterion: {first['criterion']}. "
             f"The test rows score the selected step."]  # fmt: skip
    for name, record in selections.items():
        best = next(p for p in record["curve"] if p["step"] == record["selected_step"])
        lines.append(f"- {ROW_TITLES[name]}: step {record['selected_step']} of {record['steps']} (validation R@3 "
                     f"{best['r_precision_top3']:.3f}, FID {best['fid']:.3f}); {record['note']}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _select(name: str, pipe: Any, folder: Path, evaluator, clips, sampling, config: BenchmarkConfig,
            progress: bool) -> dict[str, Any]:  # fmt: skip
    """Checkpoint selection of one generator on the validation clips (``evaluation.selection``); the chosen
    weights stay loaded in ``pipe``."""
    from ..evaluation.selection import keep_selected, select_checkpoint

    logger.info("[selection] %s: scoring its kept checkpoints on %d validation clips", ROW_TITLES[name], len(clips))
    t0 = time.perf_counter()
    record = select_checkpoint(pipe, folder, evaluator, clips, sampling, replications=config.selection_replications,
                               seed=config.seed, cache_dir=folder / "validation", progress=progress)  # fmt: skip
    record["seconds"] = round(time.perf_counter() - t0, 1)
    keep_selected(folder, record)  # the folder now holds the selected weights: `express4d evaluate` on it agrees
    logger.info("[selection] %s: step %d of %s; %s", ROW_TITLES[name], record["selected_step"], record["steps"], record["note"])
    return record


def _steps(steps: dict[str, int], stage: str) -> dict[str, int]:
    return {"max_steps": steps[stage]} if stage in steps else {}


def _folder_key(folder: Path) -> str:
    """Identity of a trained stage's output: its stage.json key (changes whenever it is retrained)."""
    try:
        return json.loads((folder / "stage.json").read_text())["key"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return "unknown"


def _clips(split) -> list[FaceMotion]:
    """Captioned FaceMotion clips of an HF split, in split order (at their stored frame rate)."""
    from ..data.splits import clips_from_split

    return clips_from_split(split)


def _write_samples(folder: Path, pipelines: dict[str, tuple[Any, dict]], clips: list[FaceMotion], config: BenchmarkConfig) -> None:
    """A few generated clips per model: Live Link CSV (60 fps) and a curve PNG titled with the caption."""
    import torch

    from ..export.plotting import plot_channel_curves

    captions = [c.caption for c in clips[: config.num_samples]]
    lengths = [c.resample(TRAIN_FPS).num_frames if c.fps != TRAIN_FPS else c.num_frames for c in clips[: config.num_samples]]
    lengths = [min(n, 196) for n in lengths]
    for name, (pipe, kwargs) in pipelines.items():
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(config.seed)
        motions = pipe(captions, num_frames=lengths, generator=generator, **kwargs).motions
        for i, motion in enumerate(motions):
            write_livelink_csv(motion, target / f"sample_{i}.csv")
            plot_channel_curves(motion, target / f"sample_{i}.png", title=f"{ROW_TITLES[name]}: {motion.caption}")


def _tokenizer_notes(out: Path) -> str:
    """Under the table: which kept weights each T2M-GPT tokenizer reloaded (``select_tokenizer_weights``), and a
    warning when a row's tokenizer learnt nothing (its rows are not results)."""
    from ..training.t2m_gpt import VQVAE_STAGE_DIR

    lines = []
    for name in ("t2m_gpt", "t2m_gpt_order"):
        try:
            selection = json.loads((out / name / VQVAE_STAGE_DIR / "training_metadata.json").read_text()).get("selection")
        except (OSError, json.JSONDecodeError):
            selection = None
        if selection:
            mse = selection["mse_by_step"]
            lines.append(f"- {ROW_TITLES[name]} tokenizer: step {selection['selected_step']} of the {len(mse)} kept, the "
                         f"lowest reconstruction MSE on {selection['clips']} {selection['split']} clips "
                         f"({mse[str(selection['selected_step'])]:.4f}; the last step, {selection['last_step']}: "
                         f"{mse[str(selection['last_step'])]:.4f}"
                         f"{', worse: the training was unstable' if selection.get('worsened') else ''})")  # fmt: skip
        why = _unsound_output(name, out / name)
        if why:
            lines.append(f"- **{ROW_TITLES[name]}: not a result:** {why}; its training failed (its vqvae_loss.png shows how).")
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def _results_notes(meta: dict[str, Any], config: BenchmarkConfig, num_clips: int) -> str:
    data = meta["data"]
    return (
        f"Mean ± 95% interval (1.96·std/√R) over {config.replications} replications; {num_clips} of "
        f"{data['test_clips_total']} test clips (whole groups of {EVAL_GROUP_SIZE}); R-Precision within groups of "
        f"{EVAL_GROUP_SIZE}. Real-row FID is between two random halves of the test clips (the sampling-noise floor), "
        f"not the set against itself. AITS = generation seconds per clip. The multi-step rows score the test "
        f"clips whose caption has two or more steps against their own captions and against the same captions with "
        f"the steps in reverse order (split at 'and then', 'then', 'before', 'and finally' and list commas; "
        f"`express4d_hf.evaluation.order.swap_steps`). Order acc. = share of the 28 two-step probe instructions "
        f"(written for the test, not corpus captions) whose first step's channels are >= 0.03 higher in the first "
        f"half of a 120-frame clip and the second step's in the second half (mean of 4 samples), with a "
        f"bootstrap 95% interval; the Real row's is the corpus synthesiser playing the probes.\n\n"
        f"- hardware: {meta['hardware']}\n- date: {meta['created']}\n- data fingerprint: `{data['fingerprint']}`\n"
        f"- evaluator: `{meta['protocol'].get('evaluator', 'unidentified')}`"
        f"{' ' + meta['evaluator']['description'] if meta.get('evaluator') else ''}\n"
        f"- MDM sampling: {config.fast_sampler} with {config.fast_steps} steps"
        f"{f', eta {config.fast_eta:g}' if config.fast_eta else ''}"
        f"{f', guidance rescale {config.fast_guidance_rescale:g}' if config.fast_guidance_rescale else ''} (fast row) and DDPM with 1000 steps "
        f"(full row, when run), guidance {config.guidance_scale}; {meta.get('mdm_sampling', 'fp32, eager')}\n"
        f"- seed: {config.seed}\n- versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}\n"
    )
