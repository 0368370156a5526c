"""``OfficialTextMotionEvaluator``: the official Express4D evaluator (``finest.tar``), converted, in our metrics.

The motion branch is the HumanML3D layout our :class:`~express4d_hf.models.evaluator.TextMotionEvaluator` already
has (movement convolutions, time / 4, then a bidirectional GRU with a learned initial state), so the weights map
onto it exactly. The text branch is the official one, a new module here: every word of the caption's
``word/POS`` tokens gets its GloVe-300 vector plus a linear embedding of a 15-way POS one-hot, and a bidirectional
GRU reads ``sos`` + at most 20 words + ``eos``. The POS tags come from the release's ``texts/*.txt`` files (a
caption -> tokens table stored in the folder at conversion); other captions are tagged by spaCy's
``en_core_web_sm`` by the official recipe when it is installed, else by the project's rule-based tagger
(:func:`express4d_hf.data.synthetic.pos_tag`, which lowercases; see docs/BENCHMARKS.md). Words outside the GloVe
vocabulary become ``unk`` with POS ``OTHER``, as officially.

What it reproduces from the official protocol, and what it fixes (docs/BENCHMARKS.md):

* reproduced: the normalisation statistics (every take, 60 fps, no epsilon), the 60 -> 20 fps decimation (every
  third frame, no low-pass filter), the text vectorisation (sos/eos, 20 words, unk, VIP POS classes);
* fixed: frames past each clip's length are zeroed in the normalised space before the movement encoder (the
  official code let the last movement features of a generated clip see the frames past its length).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..core.arkit import NUM_CHANNELS
from ..core.constants import MAX_FRAMES, TRAIN_FPS
from ..core.io import atomic_write_text
from ..core.motion import FaceMotion
from .evaluator import BiGRUEncoder, EvaluatorFormatError, MovementEncoder, TextMotionEvaluator, _resolve_folder

VOCAB_NAME = "vocab.json"  # the GloVe words, in word_vectors' row order
POS_TAGS_NAME = "pos_tags.json"  # caption -> "word/POS ..." of the release's texts/ files

# The HumanML3D POS classes (15), in one-hot order.
POS_CLASSES = ("VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV", "Loc_VIP", "Body_VIP", "Obj_VIP",
               "Act_VIP", "Desc_VIP", "OTHER")  # fmt: skip
# Words whose POS is replaced by a "VIP" class (HumanML3D's word lists; motion words, few of them facial).
VIP_WORDS: dict[str, tuple[str, ...]] = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back", "backward",
                "up", "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee", "shoulder",
                 "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball", "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance", "jump",
                "turn", "stumble", "dance", "stop", "sit", "lift", "lower", "raise", "wash", "stand", "kneel",
                "stroll", "rub", "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin", "spread",
                "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad", "happily",
                 "angrily", "sadly"),
}  # fmt: skip
MAX_TEXT_WORDS = 20  # the official max_text_len: longer token lists are cropped


def pos_class(word: str, pos: str) -> int:
    """One-hot index of a known word's POS: a VIP class when the word is in one of the lists, else its tag
    (unknown tags -> OTHER)."""
    for name, words in VIP_WORDS.items():
        if word in words:
            return POS_CLASSES.index(name)
    return POS_CLASSES.index(pos) if pos in POS_CLASSES else POS_CLASSES.index("OTHER")


_SPACY: list = []  # the loaded pipeline (or None when spaCy / en_core_web_sm is not installed), loaded once


def spacy_pos_tag(caption: str) -> str | None:
    """The official tagging recipe (HumanML3D's ``process_text``): hyphens removed, spaCy ``en_core_web_sm``,
    non-alphabetic tokens dropped, nouns and verbs lemmatised except "left", case kept. None without spaCy."""
    if not _SPACY:
        try:
            import spacy

            _SPACY.append(spacy.load("en_core_web_sm"))
        except (ImportError, OSError):
            _SPACY.append(None)
    nlp = _SPACY[0]
    if nlp is None:
        return None
    tokens = []
    for token in nlp(caption.replace("-", "")):
        if not token.text.isalpha():
            continue
        lemmatise = token.pos_ in ("NOUN", "VERB") and token.text != "left"
        tokens.append(f"{token.lemma_ if lemmatise else token.text}/{token.pos_}")
    return " ".join(tokens)


class OfficialTextEncoder(nn.Module):
    """The official text branch (``TextEncoderBiGRUCo``): ``word_vectors + pos_emb(pos_one_hot)`` -> Linear ->
    bidirectional GRU with a learned initial state over the caption's length -> the two final states ->
    Linear-LayerNorm-LeakyReLU-Linear."""

    def __init__(self, word_dim: int, pos_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.pos_emb = nn.Linear(pos_dim, word_dim)
        self.encoder = BiGRUEncoder(word_dim, hidden, out_dim)

    def forward(self, words: torch.Tensor, pos_one_hot: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(words + self.pos_emb(pos_one_hot), lengths)


class OfficialTextMotionEvaluator(TextMotionEvaluator):
    """The official evaluator's networks behind the :class:`TextMotionEvaluator` interface the protocol uses.

    Load a converted folder with ``TextMotionEvaluator.from_pretrained(folder)`` (it dispatches here) or this
    class's ``from_pretrained``. ``has_text_branch=False`` (converted without GloVe) embeds motions only.
    """

    @register_to_config
    def __init__(
        self,
        num_channels: int = NUM_CHANNELS,
        max_frames: int = MAX_FRAMES,
        fps: float = float(TRAIN_FPS),
        movement_hidden: int = 512,
        movement_dim: int = 512,
        motion_hidden: int = 512,
        text_hidden: int = 256,
        out_dim: int = 512,
        dropout: float = 0.2,
        has_text_branch: bool = True,
        vocab_size: int = 1,
        word_dim: int = 300,
        pos_dim: int = len(POS_CLASSES),
        max_text_words: int = MAX_TEXT_WORDS,
        downsample: str = "decimate",
        source: str = "",
    ):
        ModelMixin.__init__(self)
        if downsample not in ("decimate", "resample"):
            raise ValueError(f"downsample must be 'decimate' or 'resample', got {downsample!r}")
        self.movement_encoder = MovementEncoder(num_channels, movement_hidden, movement_dim, dropout)
        self.motion_encoder = BiGRUEncoder(movement_dim, motion_hidden, out_dim)
        if has_text_branch:
            self.word_vectors = nn.Parameter(torch.zeros(vocab_size, word_dim), requires_grad=False)
            self.text_encoder = OfficialTextEncoder(word_dim, pos_dim, text_hidden, out_dim)
        self.tokenizer = None
        self.vocab: list[str] = []
        self.word_index: dict[str, int] = {}
        self.pos_tags: dict[str, str] = {}
        self.stats = None
        self.reference = None

    # -- text
    def set_vocab(self, words: Sequence[str]) -> None:
        words = [str(w) for w in words]
        if len(words) != self.config.vocab_size:
            raise EvaluatorFormatError(f"vocabulary of {len(words)} words for a {self.config.vocab_size}-row table")
        if "unk" not in words:
            raise EvaluatorFormatError("the GloVe vocabulary has no 'unk' entry (unknown words map to it)")
        self.vocab, self.word_index = words, {w: i for i, w in enumerate(words)}

    def caption_tokens(self, caption: str) -> list[str]:
        """``word/POS`` tokens of a caption: the release's own (from the folder's table), else those of spaCy's
        ``en_core_web_sm`` by the official recipe when it is installed, else the project's rule-based tagger's."""
        tokens = self.pos_tags.get(caption.strip())
        if tokens is None:
            tokens = spacy_pos_tag(caption)
        if tokens is None:
            from ..data.synthetic import pos_tag

            tokens = pos_tag(caption)
        return tokens.split()

    def vectorize(self, tokens: Sequence[str]) -> tuple[list[int], list[int], int]:
        """Official vectorisation: ``sos`` + at most 20 tokens + ``eos`` (padded with ``unk`` to 22); returns word
        rows, POS classes and the length the GRU reads."""
        tokens = list(tokens)[: self.config.max_text_words]
        tokens = ["sos/OTHER", *tokens, "eos/OTHER"]
        length = len(tokens)
        tokens += ["unk/OTHER"] * (self.config.max_text_words + 2 - length)
        rows, classes = [], []
        for token in tokens:
            word, _, pos = token.partition("/")
            if word in self.word_index:
                rows.append(self.word_index[word])
                classes.append(pos_class(word, pos))
            else:
                rows.append(self.word_index["unk"])
                classes.append(POS_CLASSES.index("OTHER"))
        return rows, classes, length

    def encode_tokens(self, token_lists: Sequence[Sequence[str]]) -> torch.Tensor:
        batch = [self.vectorize(t) for t in token_lists]
        rows = torch.tensor([b[0] for b in batch], dtype=torch.long, device=self.word_vectors.device)
        classes = torch.tensor([b[1] for b in batch], dtype=torch.long, device=self.word_vectors.device)
        lengths = torch.tensor([b[2] for b in batch], dtype=torch.long)
        one_hot = nn.functional.one_hot(classes, self.config.pos_dim).to(self.word_vectors.dtype)
        return self.text_encoder(self.word_vectors[rows], one_hot, lengths)

    @torch.no_grad()
    def embed_texts(
        self, captions: Sequence[str], batch_size: int = 256, tokens: Sequence[str] | None = None
    ) -> np.ndarray:
        """Caption embeddings ``[N, out_dim]``; ``tokens`` (``"word/POS ..."`` per caption) overrides the lookup."""
        if not self.config.has_text_branch:
            raise RuntimeError(
                "this official evaluator was converted without --glove-dir, so it has no text branch: it embeds "
                "motions (FID, Diversity) but not captions (R-Precision, MM-Dist); convert again with --glove-dir"
            )
        captions = list(captions)
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"caption {i} is empty or not a string ({caption!r}); every motion needs a caption")
        token_lists = [t.split() for t in tokens] if tokens is not None else [self.caption_tokens(c) for c in captions]
        chunks = []
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(captions), batch_size):
                chunks.append(self.encode_tokens(token_lists[start : start + batch_size]).float().cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(chunks) if chunks else np.zeros((0, self.config.out_dim), np.float32)

    # -- motion
    def prepare_motions(self, motions: Sequence[FaceMotion]) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`TextMotionEvaluator.prepare_motions`, but with ``downsample="decimate"`` a clip whose rate is an
        integer multiple of the evaluator's keeps every k-th frame (the official 60 -> 20 fps, no filter)."""
        if self.config.downsample == "decimate":
            fps = float(self.config.fps)
            converted = []
            for motion in motions:
                if isinstance(motion, FaceMotion) and motion.fps > fps:
                    step = motion.fps / fps
                    if abs(step - round(step)) < 1e-6:
                        k = int(round(step))
                        motion = motion.replace(values=motion.values[::k], valid=motion.valid[::k], fps=fps)
                converted.append(motion)
            motions = converted
        return super().prepare_motions(motions)

    # -- saving and loading
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        super().save_pretrained(save_directory, **kwargs)
        folder = Path(save_directory)
        if self.config.has_text_branch:
            atomic_write_text(folder / VOCAB_NAME, json.dumps(self.vocab) + "\n")
        atomic_write_text(folder / POS_TAGS_NAME, json.dumps(self.pos_tags, indent=0, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> OfficialTextMotionEvaluator:
        model = ModelMixin.from_pretrained.__func__(cls, pretrained_model_name_or_path, **kwargs)
        folder = _resolve_folder(pretrained_model_name_or_path, kwargs)
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                tensor.data = tensor.data.clone()
        model._load_side_files(folder)
        if model.config.has_text_branch:
            try:
                model.set_vocab(json.loads((folder / VOCAB_NAME).read_text()))
            except FileNotFoundError:
                raise EvaluatorFormatError(f"{folder}: no {VOCAB_NAME} (the GloVe words of the text branch)") from None
        if (folder / POS_TAGS_NAME).is_file():
            model.pos_tags = json.loads((folder / POS_TAGS_NAME).read_text())
        return model


__all__ = ["POS_CLASSES", "OfficialTextEncoder", "OfficialTextMotionEvaluator", "pos_class"]
