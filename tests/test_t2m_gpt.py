"""T2M-GPT baseline: VQ-VAE tokenizer, GPT with KV cache, pipeline (lengths, sampling, save/load), training command."""

from __future__ import annotations

import json
import shutil


import numpy as np
import pytest
import torch

from card_snippets import run_card_snippet
from express4d_hf import read_livelink_csv
from express4d_hf.core.stats import NormStats
from express4d_hf.models.normalizer import MotionNormalizer
from express4d_hf.models.t2m_gpt import T2MGPT, MotionVQVAE, filter_logits
from express4d_hf.evaluation.scoring import pipeline_generate_fn
from express4d_hf.pipelines.common import MotionBatchOutput, MotionPipelineOutput
from express4d_hf.pipelines.loading import load_pipeline
from express4d_hf.pipelines.t2m_gpt import Express4DT2MGPTPipeline
from express4d_hf.models.text import load_text_encoder
from express4d_hf.livelink import write_livelink_csv

VQ = dict(num_codes=32, code_dim=16, width=32, depth=2)
GPT = dict(num_codes=32, hidden_size=32, num_layers=2, num_heads=4, dropout=0.0)
PROMPTS = ["A person is smiling softly", "A person is blinking twice and then frowning"]


@pytest.fixture(scope="module")
def text_encoder_dir(tmp_path_factory):
    """A small random BERT with MiniLM's tokenizer: a real transformers encoder that saves and loads in
    milliseconds (the pipeline takes any encoder; the default MiniLM is exercised by the module doctest)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from express4d_hf.models.text import default_text_encoder_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(default_text_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def text_encoder(text_encoder_dir):
    return load_text_encoder(str(text_encoder_dir))


def make_pipe(text_encoder, seed: int = 0) -> Express4DT2MGPTPipeline:
    torch.manual_seed(seed)
    vqvae = MotionVQVAE.from_preset("tiny", **VQ)
    vqvae.train()(torch.randn(4, 64, 61))  # fill the codebook from encoder outputs (as training starts)
    rng = np.random.default_rng(seed)
    stats = NormStats(rng.uniform(0, 0.3, 61), rng.uniform(0.05, 0.2, 61))
    tokenizer, encoder = text_encoder
    return Express4DT2MGPTPipeline.from_components(
        vqvae, T2MGPT.from_preset("tiny", **GPT, text_dim=32), MotionNormalizer.from_stats(stats), text_encoder=encoder,
        tokenizer=tokenizer,
    )


@pytest.fixture(scope="module")
def pipe(text_encoder):
    return make_pipe(text_encoder)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def force_end_logit(gpt: T2MGPT, value: float) -> None:
    """Make every position score the end token ``value`` and every code 0 (a constant final state)."""
    with torch.no_grad():
        gpt.ln_f.weight.zero_()
        gpt.ln_f.bias.zero_()
        gpt.ln_f.bias[0] = 1.0
        gpt.head.weight.zero_()
        gpt.head.weight[gpt.end_token_id, 0] = value


# --- VQ-VAE ------------------------------------------------------------------------------------------
def test_vqvae_round_trip_shapes_and_padding_independence():
    torch.manual_seed(0)
    vq = MotionVQVAE.from_preset("tiny", **VQ)
    vq.train()(torch.randn(4, 64, 61))
    vq.eval()
    motion = torch.randn(3, 64, 61)
    codes = vq.encode(motion)
    assert codes.shape == (3, 16) and codes.dtype == torch.long and int(codes.min()) >= 0
    assert vq.decode(codes).shape == (3, 64, 61)
    assert vq.encode(torch.randn(2, 42, 61)).shape == (2, 10)  # frames past a multiple of 4 are dropped
    with_lengths = vq.encode(motion, [64, 30, 8])
    assert (with_lengths[1, 7:] == -1).all() and (with_lengths[2, 2:] == -1).all()
    # a clip's codes do not depend on what follows it in the padded batch
    assert torch.equal(with_lengths[1, :7], vq.encode(motion[1:2, :28])[0])
    assert torch.equal(with_lengths[0], codes[0])
    recon = vq.reconstruct(motion, [64, 30, 8])
    assert recon.shape == (3, 64, 61) and recon[1, 28:].abs().sum() == 0
    losses = vq.train().compute_loss(motion, torch.arange(64)[None] < torch.tensor([[64], [30], [8]]))
    assert all(torch.isfinite(v) for v in (losses.loss, losses.reconstruction, losses.velocity, losses.commitment))
    with pytest.raises(ValueError, match="code indices"):
        vq.decode(torch.tensor([[0, VQ["num_codes"]]]))


def test_codebook_reset_revives_dead_codes():
    torch.manual_seed(0)
    vq = MotionVQVAE.from_preset("tiny", **VQ).train()
    motion = torch.randn(8, 64, 61)
    vq(motion)  # initialises the codebook from encoder outputs
    dead = torch.tensor([0, 5, 9])
    with torch.no_grad():
        vq.quantizer.codebook[dead] = 1e3  # far from every encoder output: never chosen
        vq.quantizer.code_sum[dead] = 1e3
        vq.quantizer.code_count[dead] = 0.0
    assert vq.codebook_usage()["dead_codes"] >= 3
    latents = vq.encoder(motion.permute(0, 2, 1)).permute(0, 2, 1).reshape(-1, VQ["code_dim"]).detach()
    _, indices, _, _ = vq(motion)
    assert not torch.isin(dead, indices).any()
    revived = vq.quantizer.codebook[dead]
    assert revived.abs().max() < 100  # replaced...
    distance = torch.cdist(revived, latents, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert torch.allclose(distance, torch.zeros(3), atol=1e-4)  # ...by encoder outputs of this batch
    vq.eval()
    assert torch.isin(vq.encode(motion).unique(), torch.arange(VQ["num_codes"])).all()


# --- GPT ------------------------------------------------------------------------------------------------
def test_gpt_cache_matches_full_forward():
    torch.manual_seed(0)
    gpt = T2MGPT.from_preset("tiny", **GPT).eval()
    codes, text = torch.randint(0, 32, (3, 12)), torch.randn(3, 384)  # text_dim defaults to MiniLM's 384
    full, _ = gpt(codes, text)
    assert full.shape == (3, 13, 33)
    step, cache = gpt(codes[:, :0], text, use_cache=True)
    pieces = [step]
    chunk, cache = gpt(codes[:, :5], past_key_values=cache, use_cache=True)  # several tokens at once
    pieces.append(chunk)
    for i in range(5, 12):
        step, cache = gpt(codes[:, i : i + 1], past_key_values=cache, use_cache=True)
        pieces.append(step)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-4)
    with_cache = gpt.generate(text, generator=gen(3), top_k=10)
    without = gpt.generate(text, generator=gen(3), top_k=10, use_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(with_cache, without))


def test_gpt_training_sequences_and_corruption():
    torch.manual_seed(0)
    gpt = T2MGPT.from_preset("tiny", **GPT)
    codes = torch.randint(0, 32, (2, 6))
    inputs, target = gpt.training_sequences(codes, torch.tensor([6, 3]))
    assert target[0, 6] == gpt.end_token_id and target[1, 3] == gpt.end_token_id and (target[1, 4:] == gpt.pad_token_id).all()
    assert torch.equal(inputs[0], codes[0]) and torch.equal(inputs[1, :3], codes[1, :3])
    big = torch.randint(0, 32, (64, 40))
    corrupted = gpt.corrupt_codes(big, 0.5)
    changed = (corrupted != big).float().mean()
    assert 0.35 < changed < 0.55  # about tau * (1 - 1/K) of the codes change
    assert torch.equal(gpt.corrupt_codes(big, 0.0), big)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, :2]).all()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)[0, 3]) and torch.isinf(filter_logits(logits, top_p=0.5)[0, 0])


# --- pipeline ---------------------------------------------------------------------------------------
def test_pipeline_output_and_determinism(pipe):
    out = pipe(PROMPTS, num_frames=[40, 25], generator=gen(0))
    assert isinstance(out, MotionPipelineOutput)
    assert [(m.num_frames, m.fps, m.caption) for m in out.motions] == [(40, 20.0, PROMPTS[0]), (25, 20.0, PROMPTS[1])]
    again = pipe(PROMPTS, num_frames=[40, 25], generator=gen(0))
    assert all(np.array_equal(a.values, b.values) for a, b in zip(out.motions, again.motions))
    other = pipe(PROMPTS, num_frames=[40, 25], generator=gen(1))
    assert not np.array_equal(out.motions[0].values, other.motions[0].values)
    # per-motion generators: a motion does not depend on its batch
    single = pipeline_generate_fn(pipe)([PROMPTS[1]], [25], [8])[0]
    batched = pipeline_generate_fn(pipe)(["A person nods", PROMPTS[1]], [60, 25], [7, 8])[1]
    np.testing.assert_allclose(single.values, batched.values, atol=1e-5)
    batch = pipe(PROMPTS, num_frames=30, num_motions_per_prompt=2, output_type="np", generator=gen(0))
    assert isinstance(batch, MotionBatchOutput) and batch.motions.shape == (4, 30, 61) and batch.captions[1] == PROMPTS[0]


def test_end_token_controls_length_and_num_frames_forces_it(text_encoder):
    pipe = make_pipe(text_encoder, seed=1)
    force_end_logit(pipe.transformer, 30.0)  # the model always wants to stop
    motions = pipe(PROMPTS, temperature=0.0).motions
    assert [m.num_frames for m in motions] == [20, 20]  # end suppressed until 1 s (5 codes)
    assert [m.metadata["num_codes"] for m in motions] == [5, 5]
    assert [m.num_frames for m in pipe(PROMPTS, duration_s=[2.0, 1.5], generator=gen(0)).motions] == [40, 30]
    forced = pipe(PROMPTS, num_frames=[37, 196], generator=gen(0)).motions
    assert [m.num_frames for m in forced] == [37, 196]  # end suppressed until the asked length, then cropped
    assert [m.metadata["num_codes"] for m in forced] == [10, 49]
    force_end_logit(pipe.transformer, -30.0)  # the model never wants to stop
    assert [m.num_frames for m in pipe(PROMPTS, max_num_frames=61, generator=gen(0)).motions] == [60, 60]
    codes = pipe(PROMPTS[0], max_num_frames=40, output_type="codes", generator=gen(0))
    assert [len(c) for c in codes] == [10]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt=""), "empty"),
        (dict(prompt=[]), "non-empty"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(num_frames=10), "outside"),
        (dict(num_frames=[40]), "lengths for 2 prompts"),
        (dict(num_frames=40, duration_s=2.0), "not both"),
        (dict(max_num_frames=500), "max_num_frames"),
        (dict(num_motions_per_prompt=0), "num_motions_per_prompt"),
        (dict(output_type="mp4"), "output_type"),
        (dict(generator=[torch.Generator()]), "generators"),
    ],
)
def test_pipeline_validation(pipe, kwargs, match):
    kwargs = {"prompt": PROMPTS, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)


def test_save_load_round_trip_and_csv_export(pipe, tmp_path):
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, model_card={"training": "unit test"})
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "Express4DT2MGPTPipeline"
    assert index["vqvae"] == ["express4d_hf.models.t2m_gpt", "MotionVQVAE"]
    card = (folder / "README.md").read_text()
    assert "not a diffusion model" in card and "unit test" in card and "$" not in card.split("```")[0]
    loaded = load_pipeline(folder)
    assert isinstance(loaded, Express4DT2MGPTPipeline) and loaded.card_data["training"] == "unit test"
    a = pipe(PROMPTS, generator=gen(5)).motions
    b = loaded(PROMPTS, generator=gen(5)).motions
    assert [m.num_frames for m in a] == [m.num_frames for m in b]
    assert all(np.allclose(x.values, y.values, atol=1e-5) for x, y in zip(a, b))
    torch.testing.assert_close(loaded.normalizer.std, pipe.normalizer.std)

    motion = a[0]
    write_livelink_csv(motion, tmp_path / "take.csv")
    back = read_livelink_csv(tmp_path / "take.csv")
    assert back.fps == 60.0 and back.num_frames == 3 * motion.num_frames
    np.testing.assert_allclose(back.values, motion.resample(60).values, atol=1e-4)


# --- training ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from express4d_hf.data.hub import build_dataset
    from express4d_hf.data.synthetic import synthesize_release

    root = tmp_path_factory.mktemp("t2m_data")
    release = synthesize_release(root / "release", num_clips=64, participants=3, seed=0, progress=False)
    return build_dataset(release, root / "dataset", progress=False)


def test_train_commands_end_in_loadable_folders(tiny_dataset, text_encoder_dir, tmp_path):
    from express4d_hf.cli import main
    from express4d_hf.training.t2m_gpt import TOKENS_NAME

    out = tmp_path / "run"
    common = ["--data", str(tiny_dataset), "--preset", "tiny", "--batch-size", "8"]
    encoder = ["--text-encoder", str(text_encoder_dir)]
    assert main(["train", "t2m-gpt", "--out", str(out), "--max-steps", "3"] + common + encoder) == 0
    for name in ("model_index.json", "README.md", "training_metadata.json", "gpt_loss.png", "vqvae", "transformer",
                 "normalizer", TOKENS_NAME, "vqvae_training/vqvae_codebook.png", "checkpoints/step_3"):  # fmt: skip
        assert (out / name).exists(), name
    losses = [json.loads(line) for line in (out / "vqvae_training" / "vqvae_losses.jsonl").read_text().splitlines()]
    assert any("perplexity" in r and "dead_codes" in r for r in losses)  # codebook usage logged while training
    metadata = json.loads((out / "training_metadata.json").read_text())
    assert metadata["gpt_steps"] == 3 and metadata["reconstruction_test"]["mse"] > 0
    assert metadata["held_out"]["val_loss"] > 0 and metadata["codebook"]["used_codes"] > 0
    assert metadata["held_out"]["split"] == "test"  # no validation clips held out: test is monitored (never selected on)
    # a second run in the same folder reuses the finished stage 1 and the token cache, and resumes stage 2
    stamps = {name: (out / name).stat().st_mtime_ns for name in ("vqvae_training/config.json", TOKENS_NAME)}
    assert main(["train", "t2m-gpt", "--out", str(out), "--max-steps", "4", "--vqvae-steps", "3"] + common + encoder) == 0
    assert stamps == {name: (out / name).stat().st_mtime_ns for name in stamps}
    steps = [json.loads(line)["step"] for line in (out / "gpt_losses.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [3, 4] and (out / "checkpoints" / "step_4").is_dir()

    pipe = Express4DT2MGPTPipeline.from_pretrained(out)
    assert pipe.normalizer.std.min() > 0 and pipe.normalizer.mean.abs().sum() > 0  # real train stats
    motion = pipe("A person is smiling", num_frames=30, generator=gen(0)).motions[0]
    assert motion.num_frames == 30 and np.isfinite(motion.values).all()

    # stage 1 alone, then reused by --vqvae: the tokenizer is taken as is
    vq_out = tmp_path / "vq"
    assert main(["train", "vqvae", "--out", str(vq_out), "--max-steps", "2"] + common) == 0
    reused = tmp_path / "reused"
    assert main(["train", "t2m-gpt", "--out", str(reused), "--max-steps", "2", "--vqvae", str(vq_out)] + common + encoder) == 0
    assert not (reused / "vqvae_training").exists()
    loaded = Express4DT2MGPTPipeline.from_pretrained(reused)
    trained = MotionVQVAE.from_pretrained(vq_out)
    torch.testing.assert_close(loaded.vqvae.quantizer.codebook, trained.quantizer.codebook)


def test_model_card_usage_snippet_runs_as_written(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    scope = run_card_snippet(tmp_path)
    assert scope["motion"].fps == 20 and len(scope["out"].motions) == 4
    assert all(m.num_frames == 80 for m in scope["out"].motions)  # the forced length of the second call
    assert read_livelink_csv(tmp_path / "smile.csv").fps == 60


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="Inductor needs a C++ compiler on a CPU")
def test_quantizer_under_torch_compile_keeps_the_eager_codebook():
    """The paper presets compile the VQ-VAE's step. Inductor once compiled the codebook's EMA update wrongly
    (``code_sum`` off by ~15 after one step): the codebook blew up and the compiled tokenizer reconstructed nothing
    (test MSE ~1.0 on normalised motion, every T2M-GPT row near the noise floor). Compiled and eager quantizers
    must keep the same codebook, padding excluded, over several training steps."""
    import copy

    from express4d_hf.models.t2m_gpt import EMAResetQuantizer

    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = EMAResetQuantizer(16, 4).train()
    compiled = copy.deepcopy(eager)
    run = torch.compile(compiled)  # Inductor, as `--compile` uses it
    x = torch.randn(2, 4, 40)
    valid = torch.arange(40)[None] < torch.tensor([[40], [28]])
    with inductor_config.patch(fallback_random=True):  # compiled random draws = eager's (the code resets)
        for step in range(4):
            torch.manual_seed(step)
            expected = eager(x + 0.1 * step, valid)
            torch.manual_seed(step)
            got = run(x + 0.1 * step, valid)
            assert torch.equal(got[1], expected[1])
            torch.testing.assert_close(got[2], expected[2], rtol=1e-4, atol=1e-5)
    for name in ("codebook", "code_sum", "code_count"):
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name), rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_gpt_monitors_the_validation_clips_when_they_are_held_out(tiny_dataset, text_encoder, tmp_path):
    """With checkpoint selection's validation split held out, nothing in T2M-GPT's training reads test clips: the
    held-out loss is the validation clips' (and only train and validation are tokenised). A given tokenizer folder
    whose metadata lacks its test reconstruction gets it measured."""
    from safetensors import safe_open

    from express4d_hf.training.t2m_gpt import (TOKENS_NAME, GPTTrainConfig, VQVAETrainConfig, train_t2m_gpt,
                                               train_vqvae)  # fmt: skip

    vq = VQVAETrainConfig.preset("tiny", max_steps=2, batch_size=8, checkpoint_every=2, validation_holdout=0.2)
    train_vqvae(tiny_dataset, tmp_path / "vq", vq, progress=False)
    vq_meta = json.loads((tmp_path / "vq" / "training_metadata.json").read_text())
    del vq_meta["reconstruction_test"]  # e.g. a tokenizer folder from elsewhere
    (tmp_path / "vq" / "training_metadata.json").write_text(json.dumps(vq_meta))
    gpt = GPTTrainConfig.preset("tiny", max_steps=2, batch_size=8, checkpoint_every=2, validation_holdout=0.2, sample_every=0)
    train_t2m_gpt(tiny_dataset, tmp_path, vq, gpt, vqvae_dir=tmp_path / "vq", text_encoder=text_encoder, progress=False)
    metadata = json.loads((tmp_path / "training_metadata.json").read_text())
    assert metadata["held_out"]["split"] == "validation" and metadata["held_out"]["val_loss"] > 0
    assert metadata["reconstruction_test"]["mse"] > 0 and metadata["reconstruction_test"]["mean_mse"] > 0
    with safe_open(tmp_path / TOKENS_NAME, "pt") as f:
        assert not any(key.startswith("test") for key in f.keys()) and any(key.startswith("validation") for key in f.keys())


def test_the_tokenizer_keeps_its_best_weights_when_training_blows_up_late(tiny_dataset, tmp_path):
    """A late blow-up (the paper preset's commitment went from ~0.3 to ~1e7 on the H200) must not end in the
    saved tokenizer: with kept weights, train_vqvae reloads the step that reconstructs the held-out clips best.
    The blow-up is simulated by a later kept weight file whose decoder output is wrecked."""
    from safetensors.torch import load_file

    from express4d_hf.data.hub import dataset_stats, load_express4d
    from express4d_hf.data.splits import hold_out_validation
    from express4d_hf.data.torch import MotionDataset
    from express4d_hf.training.t2m_gpt import VQVAETrainConfig, reconstruction_error, select_tokenizer_weights, train_vqvae

    vq = VQVAETrainConfig.preset("tiny", max_steps=30, batch_size=16, checkpoint_every=30, keep_weights_every=10,
                                 validation_holdout=0.2)  # fmt: skip
    model = train_vqvae(tiny_dataset, tmp_path / "vq", vq, progress=False)
    selection = json.loads((tmp_path / "vq" / "training_metadata.json").read_text())["selection"]
    assert selection["split"] == "validation" and set(selection["mse_by_step"]) == {"10", "20", "30"}
    best = min(selection["mse_by_step"], key=lambda step: (selection["mse_by_step"][step], -int(step)))
    assert selection["selected_step"] == int(best)
    kept = load_file(str(tmp_path / "vq" / "weights" / f"step_{best}.safetensors"))
    for name, tensor in model.state_dict().items():  # the returned (and saved) model is the selected step
        torch.testing.assert_close(tensor, kept[name])

    wrecked = {k: (v + 3.0 if k.startswith("decoder") and k.endswith("bias") else v) for k, v in model.state_dict().items()}
    from safetensors.torch import save_file

    save_file(wrecked, str(tmp_path / "vq" / "weights" / "step_40.safetensors"))  # a later, blown-up step
    splits = hold_out_validation(load_express4d(tiny_dataset, progress=False), 0.2, 0)
    clips = MotionDataset(splits["validation"], dataset_stats(tiny_dataset), train=False)
    record = select_tokenizer_weights(model, tmp_path / "vq", clips, "validation")
    assert record["last_step"] == 40 and record["selected_step"] == int(best) and record.get("worsened")
    assert reconstruction_error(model, clips)["mse"] == pytest.approx(selection["mse_by_step"][best], rel=1e-4)
