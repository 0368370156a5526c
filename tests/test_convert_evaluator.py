"""`express4d convert official-evaluator`: an official-layout evaluator with random weights, converted and compared."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from express4d_hf.cli import main as cli_main
from express4d_hf.convert.common import OfficialCheckpointError
from express4d_hf.convert.evaluator import convert_official_evaluator, load_plain_pickle
from express4d_hf.data.release import write_release
from express4d_hf.livelink import FaceMotion
from express4d_hf.models.evaluator import TextMotionEvaluator
from express4d_hf.models.official_evaluator import OfficialTextMotionEvaluator

from official_reference import save_official_evaluator

WORD_DIM = 10
POS = {"VERB": 0, "NOUN": 1, "DET": 2, "ADP": 3, "NUM": 4, "AUX": 5, "PRON": 6, "ADJ": 7, "ADV": 8, "Loc_VIP": 9,
       "Body_VIP": 10, "Obj_VIP": 11, "Act_VIP": 12, "Desc_VIP": 13, "OTHER": 14}  # fmt: skip
CAPTIONS = [
    ("A person is smiling", "a/DET person/NOUN is/AUX smile/VERB"),
    ("A person winks their left eye slowly", "a/DET person/NOUN wink/VERB their/PRON left/ADJ eye/NOUN slowly/ADV"),
    ("A person frowns", "a/DET person/NOUN frown/VERB"),  # "frown" is not in the vocabulary: unk / OTHER
]
WORDS = ["unk", "sos", "eos", "a", "person", "is", "smile", "wink", "their", "left", "eye", "slowly"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    nets = save_official_evaluator(root / "finest.tar", word_dim=WORD_DIM)
    glove = root / "glove"
    glove.mkdir()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(WORDS) + 3, WORD_DIM)).astype(np.float32)
    order = rng.permutation(len(vectors))[: len(WORDS)]  # rows not in word order: the index pickle maps them
    np.save(glove / "our_vab_data.npy", vectors)
    (glove / "our_vab_words.pkl").write_bytes(pickle.dumps(WORDS))
    (glove / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: int(i) for w, i in zip(WORDS, order)}))
    clips = []
    for k in range(8):
        frames = int(rng.integers(61, 200))
        values = rng.normal(size=(frames, 61)).astype(np.float32) * 0.2 + 0.3
        caption, tokens = CAPTIONS[k % 3]
        clips.append((f"take_{k}", "test" if k < 5 else "train", values, [f"{caption}#{tokens}"]))
    release = write_release(root / "release", clips, motion_format="npy")
    word2vec = {w: vectors[i] for w, i in zip(WORDS, order)}
    return {"root": root, "tar": root / "finest.tar", "glove": glove, "release": release, "nets": nets, "w2v": word2vec}


def reference_vectorize(tokens, word2vec):
    """The official WordVectorizer + Text2MotionDatasetV2 text side, from the description."""
    tokens = tokens.split()[:20]
    tokens = ["sos/OTHER", *tokens, "eos/OTHER"]
    length = len(tokens)
    tokens += ["unk/OTHER"] * (22 - length)
    vip = {"left": "Loc_VIP", "eye": "Body_VIP", "slowly": "Desc_VIP"}
    words, pos = [], []
    for token in tokens:
        word, tag = token.split("/")
        one_hot = np.zeros(15)
        if word in word2vec:
            words.append(word2vec[word])
            one_hot[POS[vip.get(word, tag)] if vip.get(word, tag) in POS else POS["OTHER"]] = 1
        else:
            words.append(word2vec["unk"])
            one_hot[POS["OTHER"]] = 1
        pos.append(one_hot)
    return np.stack(words), np.stack(pos), length


def test_converted_evaluator_equals_reference(official, tmp_path):
    out = convert_official_evaluator(
        official["tar"], tmp_path / "ev", data=official["release"], glove_dir=official["glove"]
    )
    evaluator = TextMotionEvaluator.from_pretrained(out)  # the loader the metrics and benchmark use
    assert isinstance(evaluator, OfficialTextMotionEvaluator)
    assert evaluator.stats.eps == 0.0 and evaluator.reference is not None
    assert "trained by the Express4D authors" in (out / "README.md").read_text()
    nets = {k: v.eval() for k, v in official["nets"].items()}

    # text: release tags looked up by caption, GloVe vectors, VIP classes, unk for unknown words
    captions = [c for c, _ in CAPTIONS]
    ours = evaluator.embed_texts(captions)
    batch = [reference_vectorize(t, official["w2v"]) for _, t in CAPTIONS]
    with torch.no_grad():
        theirs = nets["text_encoder"](torch.tensor(np.stack([b[0] for b in batch])).float(),
                                      torch.tensor(np.stack([b[1] for b in batch])).float(),
                                      torch.tensor([b[2] for b in batch])).numpy()  # fmt: skip
    assert np.abs(ours - theirs).max() < 1e-5

    # motion: 60 fps clips decimated to 20 fps, normalised with the release stats, zero past the length
    rng = np.random.default_rng(1)
    lengths = [196, 57, 23, 120]
    motions = [FaceMotion(rng.normal(size=(3 * n, 61)).astype(np.float32), fps=60.0) for n in lengths]
    ours = evaluator.embed_motions(motions)
    mean, std = evaluator.stats.mean, evaluator.stats.std
    padded = np.zeros((len(lengths), 196, 61), np.float32)
    for i, (m, n) in enumerate(zip(motions, lengths)):
        padded[i, :n] = (m.values[::3] - mean) / std
    with torch.no_grad():
        movements = nets["movement_encoder"](torch.from_numpy(padded))
        theirs = nets["motion_encoder"](movements, torch.tensor(lengths) // 4).numpy()
    assert np.abs(ours - theirs).max() < 1e-5


def test_motion_only_and_stats(official, tmp_path):
    out = convert_official_evaluator(official["tar"], tmp_path / "ev", data=official["release"])
    evaluator = TextMotionEvaluator.from_pretrained(out)
    assert evaluator.config.has_text_branch is False
    assert evaluator.embed_motions([FaceMotion(np.zeros((90, 61), np.float32), fps=60.0)]).shape == (1, 8)
    with pytest.raises(RuntimeError, match="--glove-dir"):
        evaluator.embed_texts(["A person is smiling"])
    # the release's statistics: every take (train + test), 60 fps, ddof 0, no floor
    from express4d_hf.data.release import load_motion_arrays, read_release

    frames = np.concatenate([load_motion_arrays(t.path)[0] for t in read_release(official["release"]).takes])
    assert np.allclose(evaluator.stats.mean, frames.mean(0), atol=1e-6)
    assert np.allclose(evaluator.stats.std, frames.std(0), atol=1e-6)


def test_plain_pickle_loader_refuses_objects(tmp_path):
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"a": [1, 2.5, "x", None, True]}))
    assert load_plain_pickle(tmp_path / "ok.pkl") == {"a": [1, 2.5, "x", None, True]}
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(np.zeros(3)))
    with pytest.raises(OfficialCheckpointError, match="only lists, dicts, strings and numbers"):
        load_plain_pickle(tmp_path / "bad.pkl")


@pytest.mark.parametrize("damage", ["network", "misshaped", "unexpected", "glove"])
def test_damaged_evaluator_refused(official, tmp_path, damage, capsys):
    payload = torch.load(official["tar"], weights_only=True)
    glove = official["glove"]
    if damage == "network":
        del payload["text_encoder"]
    elif damage == "misshaped":
        payload["motion_encoder"]["output_net.1.weight"] = torch.ones(99)
    elif damage == "unexpected":
        payload["movement_encoder"]["main.6.weight"] = torch.ones(3)
    else:
        import shutil

        glove = tmp_path / "glove"
        shutil.copytree(official["glove"], glove)
        (glove / "our_vab_idx.pkl").write_bytes(pickle.dumps(np.arange(3)))
    tar = tmp_path / "finest.tar"
    torch.save(payload, tar)
    out = tmp_path / "ev"
    code = cli_main(["convert", "official-evaluator", str(tar), "--out", str(out), "--data", str(official["release"]),
                     "--glove-dir", str(glove)])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    expected = {"network": "no text_encoder state dict", "misshaped": "motion_encoder.output_net.1.weight: [99]",
                "unexpected": "movement_encoder.main.6.weight", "glove": "refused by the plain-data unpickler"}[damage]  # fmt: skip
    assert expected in err, err


def test_free_text_tagging(monkeypatch, official, tmp_path):
    """Release captions use the release's tags; other captions spaCy's by the official recipe when installed, else
    the rule-based tagger's."""
    import sys
    import types

    from express4d_hf.models import official_evaluator as module

    out = convert_official_evaluator(
        official["tar"], tmp_path / "ev", data=official["release"], glove_dir=official["glove"]
    )
    evaluator = TextMotionEvaluator.from_pretrained(out)
    assert evaluator.caption_tokens("A person frowns") == ["a/DET", "person/NOUN", "frown/VERB"]  # the release's

    class Token:
        def __init__(self, text, pos, lemma):
            self.text, self.pos_, self.lemma_ = text, pos, lemma

    def nlp(text):
        assert "-" not in text  # hyphens are removed first
        table = {"A": ("DET", "a"), "person": ("NOUN", "person"), "winks": ("VERB", "wink"),
                 "left": ("VERB", "leave"), "eyelids": ("NOUN", "eyelid"), "twice": ("ADV", "twice")}  # fmt: skip
        return [Token(w, *table.get(w, ("PUNCT", w))) for w in text.replace(",", " ,").split()]

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=lambda name: nlp))
    monkeypatch.setattr(module, "_SPACY", [])
    # case kept, nouns and verbs lemmatised except "left", non-alphabetic tokens dropped
    assert evaluator.caption_tokens("A person winks, left eye-lids twice") == [
        "A/DET",
        "person/NOUN",
        "wink/VERB",
        "left/VERB",
        "eyelid/NOUN",
        "twice/ADV",
    ]
    monkeypatch.setattr(module, "_SPACY", [None])  # spaCy not installed: the rule-based tagger
    assert evaluator.caption_tokens("A person is winking") == ["a/DET", "person/NOUN", "is/AUX", "wink/VERB"]
