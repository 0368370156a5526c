"""`express4d convert official-mdm`: official-layout reference MDMs with random weights, converted and compared."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from express4d_hf.cli import main as cli_main
from express4d_hf.convert.common import OfficialCheckpointError
from express4d_hf.convert.mdm import (
    convert_official_mdm,
    official_betas,
    official_mdm_to_denoiser,
    official_scheduler,
    read_official_args,
    select_state_dict,
)
from express4d_hf.core.stats import NormStats
from express4d_hf.models.text import (
    encode_prompts,
    load_text_encoder,
    prompt_max_tokens,
    text_hidden_size,
    tokenize_prompts,
)

from official_reference import ReferenceMDM, save_official_mdm

CLIP_DIM = 16


def build_tiny_clip(folder):
    """A random CLIPTextModelWithProjection and a character-level CLIP tokenizer, built offline (EOS = highest id)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    for c in "abcdefghijklmnopqrstuvwxyz.,!?'":
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=CLIP_DIM,
                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                            pad_token_id=vocab["<|endoftext|>"])  # fmt: skip
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(config).eval()
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def reference_encode_text(model, tokenizer, prompts):
    """CLIP's encode_text on clip.tokenize-style input: ids zero-padded to 77, no attention mask (causal only),
    the state at the argmax id (end of text), times the projection."""
    ids = torch.zeros(len(prompts), 77, dtype=torch.long)
    for i, p in enumerate(prompts):
        t = tokenizer(p, truncation=True, max_length=77)["input_ids"]
        ids[i, : len(t)] = torch.tensor(t)
    with torch.no_grad():
        states = model.text_model(input_ids=ids).last_hidden_state
        return model.text_projection(states[torch.arange(len(prompts)), ids.argmax(-1)])


def ours_vs_reference(denoiser, ref, batch=3, frames=30, lengths=(30, 17, 5), drop=(False, True, False), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 61, generator=g)
    t = torch.tensor([0, 999, 421][:batch])
    text = torch.randn(batch, denoiser.config.text_dim, generator=g)
    mask = torch.arange(frames)[None] < torch.tensor(lengths)[:, None]
    drop = torch.tensor(drop)
    with torch.no_grad():
        ours = denoiser(x, t, text, frame_mask=mask, cond_drop_mask=drop)
        theirs = ref(x.permute(0, 2, 1)[:, :, None], t, text, drop, mask[:, None, None]).squeeze(2).permute(0, 2, 1)
    return float((ours - theirs)[mask].abs().max())


@pytest.mark.parametrize("latent,layers", [(32, 1), (64, 3)])
def test_converted_denoiser_equals_reference(tmp_path, latent, layers):
    path = save_official_mdm(tmp_path, latent_dim=latent, num_layers=layers, clip_dim=CLIP_DIM, seed=latent)
    payload = torch.load(path, weights_only=True)
    state, which = select_state_dict(payload, "auto", "ckpt")
    assert which == "model_avg"
    denoiser = official_mdm_to_denoiser(state, read_official_args(path), clip_dim=CLIP_DIM)
    ref = ReferenceMDM(latent_dim=latent, num_layers=layers, clip_dim=CLIP_DIM).eval()
    ref.load_state_dict(state)
    assert denoiser.config.norm_first is False and denoiser.config.final_layer_norm is False
    assert ours_vs_reference(denoiser, ref) < 1e-5  # padded clips, condition dropped and kept
    assert ours_vs_reference(denoiser, ref, batch=2, frames=12, lengths=(12, 12), drop=(True, False), seed=1) < 1e-5


def test_flat_checkpoint_and_weight_choice(tmp_path):
    path = save_official_mdm(tmp_path, ema=False, clip_dim=CLIP_DIM)
    payload = torch.load(path, weights_only=True)
    assert select_state_dict(payload, "auto", "x")[1] == "model"
    with pytest.raises(OfficialCheckpointError, match="model_avg"):
        select_state_dict(payload, "model_avg", "x")
    ema = save_official_mdm(tmp_path / "ema", clip_dim=CLIP_DIM)
    both = torch.load(ema, weights_only=True)
    raw, which = select_state_dict(both, "model", "x")
    assert which == "model" and torch.equal(raw["embed_text.weight"], both["model"]["embed_text.weight"])


def test_scheduler_betas_match_official():
    scheduler = official_scheduler({"diffusion_steps": 1000, "noise_schedule": "cosine", "sigma_small": True})
    reference = official_betas("cosine", 1000)
    assert np.abs(scheduler.betas.double().numpy() - reference).max() < 1e-6
    cumprod = np.cumprod(1 - reference)
    # diffusers keeps float32: tiny absolute error, ~1e-3 relative at the noisiest step (documented)
    assert np.abs(scheduler.alphas_cumprod.double().numpy() - cumprod).max() < 1e-6
    assert scheduler.config.prediction_type == "sample" and scheduler.config.variance_type == "fixed_small"
    linear = official_scheduler({"diffusion_steps": 100, "noise_schedule": "linear"})
    assert np.abs(linear.betas.double().numpy() - official_betas("linear", 100)).max() < 1e-6


def test_clip_mode_equals_encode_text(tiny_clip):
    tokenizer, model = load_text_encoder(tiny_clip, pooling="clip_projected")
    assert type(model).__name__ == "CLIPTextModelWithProjection"
    assert text_hidden_size(model) == CLIP_DIM and prompt_max_tokens(model) == 77
    prompts = ["a person smiles.", "wink", "x" * 90]  # the last one is longer than 64 tokens: no 64 cap
    pooled, _, _ = encode_prompts(tokenizer, model, prompts)
    expected = reference_encode_text(model, tokenizer, prompts)
    assert float((pooled - expected).abs().max()) < 1e-5
    fixed = tokenize_prompts(tokenizer, prompts, max_length=prompt_max_tokens(model), fixed_length=True)
    assert fixed["input_ids"].shape[1] == 77  # the fast path's recorded graph sees CLIP's whole context
    truncated = reference_encode_text(model, tokenizer, ["x" * 62])
    assert not torch.allclose(pooled[2:], truncated, atol=1e-4)  # the 90-char prompt was not cut at 64 tokens


def _stats():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.05, 1.0, size=61)
    std[51] = 1e-4  # e.g. TongueOut: below NormStats' default floor (1e-2), kept exactly
    return NormStats(rng.normal(size=61), std, fps=60.0, eps=0.0, info={"source": "test"})


def test_convert_pipeline_end_to_end(tmp_path, tiny_clip):
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline

    ckpt = save_official_mdm(tmp_path / "official", latent_dim=32, num_layers=2, clip_dim=CLIP_DIM)
    stats = _stats()
    out = convert_official_mdm(ckpt, tmp_path / "pipe", text_encoder=tiny_clip, stats=stats)
    pipe = Express4DMDMPipeline.from_pretrained(out)
    config = json.loads((out / "denoiser" / "config.json").read_text())
    assert config["norm_first"] is False and config["final_layer_norm"] is False
    # the release stats are kept exactly (no floor), and the output rate stays 20 fps
    assert np.array_equal(pipe.normalizer.std.numpy(), stats.std) and stats.std.min() < 1e-2
    assert pipe.normalizer.config.fps == 20.0 and pipe.normalizer.config.stats_fps == 60.0
    # the denoiser equals the official network with the EMA weights
    ref = ReferenceMDM(latent_dim=32, num_layers=2, clip_dim=CLIP_DIM).eval()
    ref.load_state_dict(torch.load(ckpt, weights_only=True)["model_avg"])
    assert ours_vs_reference(pipe.denoiser, ref) < 1e-5
    # the text features are CLIP's encode_text
    emb = pipe.encode_text(["a person smiles."])
    assert (
        float((emb - reference_encode_text(pipe.text_encoder, pipe.tokenizer, ["a person smiles."])).abs().max()) < 1e-5
    )
    # the fast path's recorded text encoder: CLIP's 77-token context, the same pooled features
    long = ["x" * 90, "a person smiles."]
    tokens = pipe._recorded_text_tokens(long, "cpu")
    assert tokens["input_ids"].shape == (2, 77)
    with torch.no_grad():
        recorded = pipe._recorded_text_encoder(**tokens)
    assert float((recorded - pipe.encode_text(long)).abs().max()) < 1e-5
    out_motion = pipe(
        ["a person smiles."], num_frames=24, num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    )
    assert out_motion.motions[0].num_frames == 24 and out_motion.motions[0].fps == 20.0
    card = (out / "README.md").read_text()
    assert "Express4D authors" in card and "sha256" in card


@pytest.mark.parametrize("damage", ["missing", "unexpected", "misshaped", "table", "truncated", "pickle"])
def test_damaged_checkpoints_refused(tmp_path, tiny_clip, damage, capsys):
    ckpt = save_official_mdm(tmp_path / "official", latent_dim=32, num_layers=2, clip_dim=CLIP_DIM)
    payload = torch.load(ckpt, weights_only=True)
    state = payload["model_avg"]
    if damage == "missing":
        del state["seqTransEncoder.layers.1.norm2.bias"], state["embed_text.bias"]
    elif damage == "unexpected":
        state["seqTransEncoder.norm.weight"] = torch.ones(32)
    elif damage == "misshaped":
        state["embed_text.weight"] = torch.zeros(32, 99)
    elif damage == "table":
        state["sequence_pos_encoder.pe"] = torch.randn_like(state["sequence_pos_encoder.pe"])
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "pickle":
        torch.save({"model_avg": state, "evil": math.nan, "obj": _Opaque()}, ckpt)
    else:
        torch.save(payload, ckpt)
    out = tmp_path / "pipe"
    code = cli_main(["convert", "official-mdm", str(ckpt), "--out", str(out), "--text-encoder", tiny_clip])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists() and not list(tmp_path.glob(".pipe.tmp*"))
    expected = {
        "missing": ["2 missing", "seqTransEncoder.layers.1.norm2.bias", "embed_text.bias"],
        "unexpected": ["1 unexpected", "seqTransEncoder.norm.weight"],
        "misshaped": ["mis-shaped", "embed_text.weight: [32, 99], expected [32, 16]"],
        "table": ["not the sinusoidal table"],
        "truncated": ["not a readable torch checkpoint"],
        "pickle": ["refused by the safe loader"],
    }[damage]
    for text in expected:
        assert text in err, err


class _Opaque:  # not allowed by weights_only unpickling
    pass


def test_paper_size_layout():
    """The released model's size: 106 learned tensors (17.67 M parameters) plus two copies of the positional table."""
    torch.manual_seed(0)
    ref = ReferenceMDM(latent_dim=512, num_layers=8, clip_dim=512).eval()
    state = ref.state_dict()
    learned = [k for k in state if not k.endswith(".pe")]
    assert len(state) == 108 and len(learned) == 106
    assert round(sum(state[k].numel() for k in learned) / 1e6, 2) == 17.67
    denoiser = official_mdm_to_denoiser(state, {"latent_dim": 512, "layers": 8})
    assert sum(p.numel() for p in denoiser.parameters()) == sum(state[k].numel() for k in learned)
    assert ours_vs_reference(denoiser, ref, batch=2, frames=20, lengths=(20, 9), drop=(False, True)) < 1e-5


def test_cli_converts_with_release_mean_std_files(tmp_path, tiny_clip, capsys):
    from express4d_hf.pipelines.mdm import Express4DMDMPipeline

    ckpt = save_official_mdm(tmp_path / "official", latent_dim=32, num_layers=1, clip_dim=CLIP_DIM, ema=False)
    stats = _stats()
    np.save(tmp_path / "Mean.npy", stats.mean)
    np.save(tmp_path / "Std.npy", stats.std)
    out = tmp_path / "pipe"
    args = ["convert", "official-mdm", str(ckpt), "--out", str(out), "--text-encoder", tiny_clip,
            "--stats", f"{tmp_path / 'Mean.npy'},{tmp_path / 'Std.npy'}"]  # fmt: skip
    assert cli_main(args) == 0
    assert "wrote" in capsys.readouterr().out
    pipe = Express4DMDMPipeline.from_pretrained(out)
    assert np.array_equal(pipe.normalizer.mean.numpy(), stats.mean)
    assert json.loads((out / "card_data.json").read_text())["conversion"]["weights"] == "model"
    assert cli_main(args) == 2  # the folder exists: refused without --overwrite
    assert cli_main([*args, "--overwrite"]) == 0


def test_clip_mode_from_a_full_clip_checkpoint(tmp_path, tiny_clip):
    """The default text encoder (openai/clip-vit-base-patch32) is a whole CLIP checkpoint: its text tower loads as
    CLIPTextModelWithProjection and pools exactly as CLIPModel.get_text_features (HF's encode_text)."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=CLIP_DIM)  # fmt: skip
    config = CLIPConfig(text_config=CLIPTextConfig.from_pretrained(tiny_clip).to_dict(),
                        vision_config=vision.to_dict(), projection_dim=CLIP_DIM)  # fmt: skip
    torch.manual_seed(0)
    full = CLIPModel(config).eval()
    full.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    tok, model = load_text_encoder(str(tmp_path / "clip"), pooling="clip_projected")
    prompts = ["a person smiles.", "wink"]
    pooled = encode_prompts(tok, model, prompts)[0]
    with torch.no_grad():
        expected = full.get_text_features(**tok(prompts, padding=True, return_tensors="pt"))
    expected = getattr(expected, "pooler_output", expected)
    assert float((pooled - expected).abs().max()) < 1e-6


def test_bad_args_json_refused(tmp_path, tiny_clip, capsys):
    ckpt = save_official_mdm(tmp_path / "official", latent_dim=32, num_layers=1, clip_dim=CLIP_DIM)
    (ckpt.parent / "args.json").write_text("{not json")
    out = tmp_path / "pipe"
    assert cli_main(["convert", "official-mdm", str(ckpt), "--out", str(out), "--text-encoder", tiny_clip]) == 2
    assert "args.json: not valid JSON" in capsys.readouterr().err and not out.exists()
    (ckpt.parent / "args.json").write_text(json.dumps({"latent_dim": 64, "layers": 1}))  # not the tensors' size
    assert cli_main(["convert", "official-mdm", str(ckpt), "--out", str(out), "--text-encoder", tiny_clip]) == 2
    assert "mis-shaped" in capsys.readouterr().err and not out.exists()
