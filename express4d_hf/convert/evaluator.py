"""Convert the official Express4D evaluator (``finest.tar``) into an evaluator folder the metrics load.

``finest.tar`` (``torch.save``) holds ``text_encoder``, ``motion_encoder`` and ``movement_encoder`` state dicts
(plus optimiser states, ``epoch`` and ``iter``, ignored). The motion side maps onto
:class:`~express4d_hf.models.evaluator.TextMotionEvaluator`'s modules exactly:

=====================================================  =====================================
official                                               ours
=====================================================  =====================================
``movement_encoder.main.0`` / ``main.3`` (Conv1d k4 s2)  ``movement_encoder.convs.0`` / ``convs.3``
``movement_encoder.out_net``                           ``movement_encoder.out``
``motion_encoder.input_emb`` / ``gru`` / ``hidden``    ``motion_encoder.input`` / ``gru`` / ``initial``
``motion_encoder.output_net.0/1/3``                    ``motion_encoder.output.0/1/3``
``text_encoder.pos_emb``                               ``text_encoder.pos_emb``
``text_encoder.input_emb`` / ``gru`` / ``hidden``      ``text_encoder.encoder.input`` / ``gru`` / ``initial``
``text_encoder.output_net.0/1/3``                      ``text_encoder.encoder.output.0/1/3``
=====================================================  =====================================

Hidden sizes are read from the tensors (the released wrapper uses 256/512, the training defaults 512/1024).
The text side needs the GloVe vocabulary (``our_vab_data.npy``, ``our_vab_words.pkl``, ``our_vab_idx.pkl``). Its
pickles are read by :func:`load_plain_pickle`, which builds only lists, dicts, strings and numbers: the one-off
conversion stores them as ``vocab.json`` + a tensor in the folder's safetensors, so loading never unpickles.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.arkit import NUM_CHANNELS
from ..core.constants import MIN_FRAMES, TRAIN_FPS
from ..core.io import atomic_folder
from ..core.motion import FaceMotion
from ..models.official_evaluator import POS_CLASSES, OfficialTextMotionEvaluator
from .common import KeyMapping, OfficialCheckpointError, file_sha256, load_official_torch_file
from .stats import load_stats_argument

logger = logging.getLogger(__name__)

GLOVE_FILES = ("our_vab_data.npy", "our_vab_words.pkl", "our_vab_idx.pkl")
NETWORKS = ("movement_encoder", "motion_encoder", "text_encoder")


# --- GloVe, without arbitrary unpickling --------------------------------------------------------------------
class _PlainUnpickler(pickle.Unpickler):
    """Builds only what needs no global lookup: lists, dicts, tuples, strings, numbers, booleans, None."""

    def find_class(self, module: str, name: str):  # noqa: D102 - every global is refused
        raise pickle.UnpicklingError(f"refers to {module}.{name}; only lists, dicts, strings and numbers are accepted")


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a file that may hold only lists, dicts, strings and numbers (the GloVe vocabulary files)."""
    path = Path(path)
    try:
        return _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise OfficialCheckpointError(f"{path}: refused by the plain-data unpickler ({err})") from None


def load_glove(glove_dir: str | os.PathLike, word_dim: int) -> tuple[list[str], np.ndarray]:
    """``(words, vectors [len(words), word_dim] float32)`` from the official GloVe vocabulary files."""
    folder = Path(glove_dir).expanduser()
    missing = [name for name in GLOVE_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (the official glove/ folder holds them)")
    try:
        data = np.load(folder / GLOVE_FILES[0], allow_pickle=False)
    except ValueError as err:
        raise OfficialCheckpointError(f"{folder / GLOVE_FILES[0]}: not a plain numeric array ({err})") from None
    words = load_plain_pickle(folder / GLOVE_FILES[1])
    index = load_plain_pickle(folder / GLOVE_FILES[2])
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
        raise OfficialCheckpointError(f"{folder / GLOVE_FILES[1]}: expected a list of words")
    if not isinstance(index, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in index.items()):
        raise OfficialCheckpointError(f"{folder / GLOVE_FILES[2]}: expected a dict word -> row")
    if data.ndim != 2 or data.shape[1] != word_dim:
        raise OfficialCheckpointError(
            f"{folder / GLOVE_FILES[0]}: vectors of shape {data.shape}, but the text encoder reads {word_dim}-d words"
        )
    bad = [w for w in words if not (w in index and 0 <= index[w] < len(data))]
    if bad:
        raise OfficialCheckpointError(f"{folder}: {len(bad)} word(s) without a vector row, e.g. {bad[:5]}")
    if "unk" not in index:
        raise OfficialCheckpointError(f"{folder}: the vocabulary has no 'unk' word")
    vectors = np.stack([data[index[w]] for w in words]).astype(np.float32)
    return list(words), vectors


# --- the networks -------------------------------------------------------------------------------------------
def _shape(state: dict, key: str, ndim: int, source: str) -> tuple[int, ...]:
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        raise OfficialCheckpointError(
            f"{source}: {key} is missing or not a {ndim}-d tensor; is this an evaluator finest.tar?"
        )
    return tuple(value.shape)


def _gru(mapping: KeyMapping, src: str, dst: str, in_dim: int, hidden: int) -> None:
    mapping.add(src + "input_emb.weight", dst + "input.weight", (hidden, in_dim))
    mapping.add(src + "input_emb.bias", dst + "input.bias", (hidden,))
    for suffix in ("", "_reverse"):
        mapping.add(src + f"gru.weight_ih_l0{suffix}", dst + f"gru.weight_ih_l0{suffix}", (3 * hidden, hidden))
        mapping.add(src + f"gru.weight_hh_l0{suffix}", dst + f"gru.weight_hh_l0{suffix}", (3 * hidden, hidden))
        mapping.add(src + f"gru.bias_ih_l0{suffix}", dst + f"gru.bias_ih_l0{suffix}", (3 * hidden,))
        mapping.add(src + f"gru.bias_hh_l0{suffix}", dst + f"gru.bias_hh_l0{suffix}", (3 * hidden,))
    mapping.add(src + "hidden", dst + "initial", (2, 1, hidden))


def _output(mapping: KeyMapping, src: str, dst: str, hidden: int, out_dim: int) -> None:
    mapping.add(src + "output_net.0.weight", dst + "output.0.weight", (hidden, 2 * hidden))
    mapping.add(src + "output_net.0.bias", dst + "output.0.bias", (hidden,))
    mapping.add(src + "output_net.1.weight", dst + "output.1.weight", (hidden,))
    mapping.add(src + "output_net.1.bias", dst + "output.1.bias", (hidden,))
    mapping.add(src + "output_net.3.weight", dst + "output.3.weight", (out_dim, hidden))
    mapping.add(src + "output_net.3.bias", dst + "output.3.bias", (out_dim,))


def official_evaluator_from_state(payload: Any, source: str, text_branch: bool) -> OfficialTextMotionEvaluator:
    """The evaluator networks of a loaded ``finest.tar``, strictly mapped; sizes read from the tensors."""
    if not isinstance(payload, dict):
        raise OfficialCheckpointError(f"{source}: holds a {type(payload).__name__}, not a checkpoint dict")
    absent = [k for k in NETWORKS if not isinstance(payload.get(k), dict)]
    if absent:
        raise OfficialCheckpointError(
            f"{source}: no {', '.join(absent)} state dict(s); is this the evaluator's finest.tar?"
        )
    flat = {f"{net}.{key}": value for net in NETWORKS for key, value in payload[net].items()}
    mov_hidden, channels, _ = _shape(flat, "movement_encoder.main.0.weight", 3, source)
    mov_dim = _shape(flat, "movement_encoder.main.3.weight", 3, source)[0]
    mot_hidden = _shape(flat, "motion_encoder.input_emb.weight", 2, source)[0]
    out_dim = _shape(flat, "motion_encoder.output_net.3.weight", 2, source)[0]
    txt_hidden, word_dim = _shape(flat, "text_encoder.input_emb.weight", 2, source)
    pos_dim = _shape(flat, "text_encoder.pos_emb.weight", 2, source)[1]
    if channels != NUM_CHANNELS:
        raise OfficialCheckpointError(f"{source}: the movement encoder reads {channels} channels, not {NUM_CHANNELS}")
    if pos_dim != len(POS_CLASSES):
        raise OfficialCheckpointError(f"{source}: {pos_dim} POS classes, expected {len(POS_CLASSES)}")
    mapping = KeyMapping(source)
    m, d = "movement_encoder.", "movement_encoder."
    mapping.add(m + "main.0.weight", d + "convs.0.weight", (mov_hidden, NUM_CHANNELS, 4))
    mapping.add(m + "main.0.bias", d + "convs.0.bias", (mov_hidden,))
    mapping.add(m + "main.3.weight", d + "convs.3.weight", (mov_dim, mov_hidden, 4))
    mapping.add(m + "main.3.bias", d + "convs.3.bias", (mov_dim,))
    mapping.add(m + "out_net.weight", d + "out.weight", (mov_dim, mov_dim))
    mapping.add(m + "out_net.bias", d + "out.bias", (mov_dim,))
    _gru(mapping, "motion_encoder.", "motion_encoder.", mov_dim, mot_hidden)
    _output(mapping, "motion_encoder.", "motion_encoder.", mot_hidden, out_dim)
    t = "text_encoder."
    text_dst = "text_encoder.encoder." if text_branch else None
    mapping.add(t + "pos_emb.weight", "text_encoder.pos_emb.weight" if text_branch else None, (word_dim, pos_dim))
    mapping.add(t + "pos_emb.bias", "text_encoder.pos_emb.bias" if text_branch else None, (word_dim,))
    sub = KeyMapping(source)
    _gru(sub, t, text_dst or "", word_dim, txt_hidden)
    _output(sub, t, text_dst or "", txt_hidden, out_dim)
    for key, (ours, shape, _) in sub.rules.items():
        mapping.add(key, ours if text_branch else None, shape)
    ours = mapping.apply(flat)
    model = OfficialTextMotionEvaluator(
        movement_hidden=mov_hidden, movement_dim=mov_dim, motion_hidden=mot_hidden, text_hidden=txt_hidden,
        out_dim=out_dim, has_text_branch=text_branch, word_dim=word_dim, pos_dim=pos_dim,
        vocab_size=1, source=source,
    )  # fmt: skip
    missing = [k for k in model.state_dict() if k not in ours and k != "word_vectors"]
    assert not missing, missing
    model.load_state_dict(ours, strict=False)
    return model.eval()


# --- the data side -----------------------------------------------------------------------------------------
def _release_side(data: str | os.PathLike) -> tuple[dict[str, str], list[FaceMotion]]:
    """Caption -> POS tokens (every caption line of both splits) and the test clips (60 fps, >= 20 frames at 20 fps)."""
    from ..data.release import is_release_dir, load_motion_arrays, read_release

    tags: dict[str, str] = {}
    clips: list[FaceMotion] = []
    path = Path(data).expanduser()
    if path.is_dir() and is_release_dir(path):
        release = read_release(path)
        for take in release.takes:
            for caption, tokens in zip(take.captions, take.tokens):
                if tokens:
                    tags.setdefault(caption.strip(), tokens)
            if take.split == "test":
                values, valid, fps, _ = load_motion_arrays(take.path)
                clips.append(FaceMotion(values, fps=fps, valid=valid, caption=take.captions[0],
                                        metadata={"id": take.name}))  # fmt: skip
    else:
        from ..data.hub import load_express4d

        splits = load_express4d(data, progress=False)
        for name in splits:
            for row in splits[name]:
                for caption, tokens in zip(row["captions"], row["tokens"]):
                    if tokens:
                        tags.setdefault(caption.strip(), tokens)
        for row in splits["test"].with_format("numpy"):
            clips.append(FaceMotion(np.asarray(row["motion"], np.float32), fps=float(row["fps"]),
                                    caption=str(row["caption"]), metadata={"id": str(row["id"])}))  # fmt: skip
    clips = [c for c in clips if math.ceil(c.num_frames * TRAIN_FPS / c.fps - 1e-9) >= MIN_FRAMES]
    return tags, clips


def convert_official_evaluator(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    data: str | os.PathLike,
    glove_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert ``finest.tar`` into an evaluator folder (weights, config, ``stats.json`` = the release's official
    statistics, ``reference.safetensors`` = the FID reference of ``data``'s test clips, ``pos_tags.json``, and with
    ``glove_dir`` the text branch's ``vocab.json``). Written atomically; nothing is written on any error."""
    checkpoint = Path(checkpoint).expanduser()
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    payload = load_official_torch_file(checkpoint)
    model = official_evaluator_from_state(payload, str(checkpoint), text_branch=glove_dir is not None)
    if glove_dir is not None:
        words, vectors = load_glove(glove_dir, model.config.word_dim)
        text_state = {k: v for k, v in model.state_dict().items() if k.startswith("text_encoder.")}
        model = _with_vocab(model, len(words))
        model.load_state_dict(text_state, strict=False)
        with torch.no_grad():
            model.word_vectors.copy_(torch.from_numpy(vectors))
        model.set_vocab(words)
    else:
        logger.warning("no --glove-dir: only the motion branch is converted (FID and Diversity, no R-Precision)")
    stats = load_stats_argument(data)
    tags, clips = _release_side(data)
    model.stats, model.pos_tags = stats, tags
    epoch = payload.get("epoch") if isinstance(payload.get("epoch"), int) else None
    model.register_to_config(source=f"{checkpoint.name} sha256 {file_sha256(checkpoint)}"
                             + (f", epoch {epoch}" if epoch is not None else ""))  # fmt: skip
    if len(clips) >= 2:
        model.set_reference(model.embed_motions(clips))
    else:
        logger.warning("%s: fewer than 2 test clips, so no FID reference is stored", data)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        (tmp / "README.md").write_text(_evaluator_card(model, checkpoint, data, len(clips)), encoding="utf-8")
    return out


def _evaluator_card(model: OfficialTextMotionEvaluator, checkpoint: Path, data, num_clips: int) -> str:
    cfg = model.config
    text = (f"GloVe-{cfg.word_dim} BiGRU (hidden {cfg.text_hidden}) over {cfg.vocab_size} words + {cfg.pos_dim}-way POS "
            "one-hots" if cfg.has_text_branch else "not converted (no --glove-dir): motions only, no R-Precision")  # fmt: skip
    return (
        "# Express4D official evaluator (converted)\n\n"
        "The text-motion evaluator **trained by the Express4D authors** (Aloni et al., 2025; "
        "github.com/jaron1990/Express4D), converted unchanged by `express4d convert official-evaluator`. "
        "Load it with `TextMotionEvaluator.from_pretrained(folder)`; score with `express4d evaluate --evaluator "
        "folder` or `express4d benchmark --evaluator folder`.\n\n"
        f"- source: `{cfg.source}`\n"
        f"- motion branch: movement convolutions {cfg.num_channels} -> {cfg.movement_hidden} -> {cfg.movement_dim} "
        f"(time / 4), BiGRU hidden {cfg.motion_hidden}, embeddings of width {cfg.out_dim}\n"
        f"- text branch: {text}\n"
        f"- normalisation: the release's statistics ({model.stats.info.get('computed', '') if model.stats else ''})\n"
        f"- FID reference: {num_clips} test clips of `{data}`\n"
        "- protocol quirks reproduced and fixed: docs/BENCHMARKS.md, \"Reporting numbers on the official evaluator\"\n"
    )


def _with_vocab(model: OfficialTextMotionEvaluator, vocab_size: int) -> OfficialTextMotionEvaluator:
    """The same networks with a word table of ``vocab_size`` rows."""
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    fresh = OfficialTextMotionEvaluator(**{**config, "vocab_size": vocab_size})
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k != "word_vectors"}, strict=False)
    return fresh.eval()


__all__ = ["convert_official_evaluator", "load_glove", "load_plain_pickle", "official_evaluator_from_state"]
