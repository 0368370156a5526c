"""Order of multi-step instructions (issue 20): token-state text encoding, the order-aware MDM and T2M-GPT
variants, the order-swapped control and the order probe. Tiny configs only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from express4d_hf.evaluation.order import (
    ORDER_PROBES,
    OrderProbe,
    bootstrap_interval,
    evaluate_order_swapped,
    multi_step_subset,
    order_probe,
    probe_passes,
    reference_generator,
    split_steps,
    swap_steps,
)
from express4d_hf.core.motion import FaceMotion
from express4d_hf.models.mdm import MDMDenoiser
from express4d_hf.models.t2m_gpt import MotionVQVAE, T2MGPT
from express4d_hf.pipelines.mdm import Express4DMDMPipeline, make_scheduler
from express4d_hf.pipelines.t2m_gpt import Express4DT2MGPTPipeline
from express4d_hf.models.text import TextEncoding, encode_prompts

TINY_MDM = dict(num_layers=2, hidden_size=64, ff_size=128, num_heads=4)
PROMPTS = ["A person is smiling softly", "A person is blinking twice and then frowning"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this file runs its tiny models on one thread."""


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


# --- text encoding ---------------------------------------------------------------------------------------
def test_text_encoding_returns_pooled_states_and_mask(text_encoder):
    tokenizer, encoder = text_encoder
    enc = encode_prompts(tokenizer, encoder, ["A person blinks", "A person first smiles and then frowns"])
    pooled, states, mask = enc  # still unpacks like the old tuple
    assert isinstance(enc, TextEncoding) and pooled.shape == (2, 384) and states.shape[:2] == mask.shape
    assert mask.dtype == torch.bool and mask[0].sum() < mask[1].sum()
    weights = mask[..., None].float()
    torch.testing.assert_close(pooled, (states * weights).sum(1) / weights.sum(1))
    longer = enc.padded_to(states.shape[1] + 3)
    assert longer.states.shape[1] == states.shape[1] + 3 and not longer.mask[:, -3:].any()
    both = TextEncoding.cat([enc, enc.padded_to(2)])
    assert both.states.shape == (4, states.shape[1], 384)
    empty = TextEncoding.empty_like(enc)
    assert not empty.mask.any() and float(empty.pooled.abs().sum()) == 0.0
    assert enc.repeat_interleave(2).pooled.shape == (4, 384)


def test_pooled_vectors_of_reversed_steps_are_nearly_equal_but_token_states_differ(text_encoder):
    """Why the variant exists: the pooled vectors of "X then Y" and "Y then X" are almost the same."""
    tokenizer, encoder = text_encoder
    a, b = "A person first smiles broadly and then frowns deeply", "A person first frowns deeply and then smiles broadly"
    enc = encode_prompts(tokenizer, encoder, [a, b])
    assert float(torch.cosine_similarity(enc.pooled[0], enc.pooled[1], dim=0)) > 0.97
    per_token = torch.cosine_similarity(enc.states[0], enc.states[1], dim=-1)[enc.mask[0] & enc.mask[1]]
    assert float(per_token.min()) < 0.8  # position by position the token states disagree


# --- MDM -------------------------------------------------------------------------------------------------
def test_order_aware_denoiser_masks_text_padding_and_drops_the_whole_sequence():
    torch.manual_seed(0)
    model = MDMDenoiser.from_preset("tiny_order", **TINY_MDM).eval()
    assert model.config.text_conditioning == "tokens" and model.uses_text_tokens
    x, t = torch.randn(2, 30, 61), torch.tensor([10, 500])
    frames = torch.arange(30)[None] < torch.tensor([[30], [24]])
    pooled, states = torch.randn(2, 384), torch.randn(2, 7, 384)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out = model(x, t, pooled, frame_mask=frames, encoder_token_states=states, encoder_attention_mask=mask)
    garbage = states.clone()
    garbage[1, 4:] = 100.0  # padding tokens hold anything
    again = model(x, t, pooled, frame_mask=frames, encoder_token_states=garbage, encoder_attention_mask=mask)
    torch.testing.assert_close(out, again)
    reversed_tokens = model(x, t, pooled, frame_mask=frames, encoder_token_states=states.flip(1))
    assert not torch.allclose(out, reversed_tokens, atol=1e-4)  # token order reaches the output
    drop = torch.tensor([True, True])
    dropped = model(x, t, pooled, frame_mask=frames, cond_drop_mask=drop, encoder_token_states=states, encoder_attention_mask=mask)
    other = model(x, t, torch.randn(2, 384), frame_mask=frames, cond_drop_mask=drop,
                  encoder_token_states=torch.randn(2, 3, 384))  # fmt: skip
    torch.testing.assert_close(dropped, other)  # no trace of the text when it is dropped
    with pytest.raises(ValueError, match="encoder_token_states"):
        model(x, t, pooled)
    with pytest.raises(ValueError, match="text_conditioning"):
        MDMDenoiser(text_conditioning="words")


def test_token_states_may_be_wider_than_the_pooled_vector():
    """CLIP mode: the pooled vector is the projection's width, the token states the hidden width."""
    model = MDMDenoiser.from_preset("tiny_order", text_dim=32, text_token_dim=48, **TINY_MDM).eval()
    out = model(torch.randn(1, 20, 61), torch.tensor([3]), torch.randn(1, 32), encoder_token_states=torch.randn(1, 5, 48))
    assert out.shape == (1, 20, 61)
    gpt = T2MGPT.from_preset("tiny_order", num_codes=16, text_dim=32, text_token_dim=48).eval()
    assert gpt(torch.zeros(1, 3, dtype=torch.long), torch.randn(1, 32), text_token_states=torch.randn(1, 5, 48))[0].shape == (1, 4, 17)


def test_order_switch_is_saved_in_the_config(tmp_path):
    for preset in ("tiny_order", "paper_order"):
        model = MDMDenoiser.from_preset(preset, num_layers=1) if preset == "paper_order" else MDMDenoiser.from_preset(preset)
        model.save_pretrained(tmp_path / preset)
        loaded = MDMDenoiser.from_pretrained(tmp_path / preset)
        assert loaded.uses_text_tokens and loaded.config.text_conditioning == "tokens"
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[name], tensor)
    assert not MDMDenoiser.from_preset("tiny").uses_text_tokens


def test_text_attention_is_saved_and_old_order_aware_configs_load_as_joint(tmp_path):
    """New presets attend to the text in a softmax of their own ("separate"); a folder saved before the field
    existed (no ``text_attention`` in config.json) loads with the joint softmax it was trained with."""
    import json

    assert MDMDenoiser.from_preset("tiny_order").config.text_attention == "separate"
    assert MDMDenoiser.from_preset("paper_order", num_layers=1).config.text_attention == "separate"
    x, t = torch.randn(2, 30, 61), torch.tensor([10, 500])
    frames = torch.arange(30)[None] < torch.tensor([[30], [24]])
    text = dict(encoder_token_states=torch.randn(2, 7, 384), encoder_attention_mask=torch.tensor([[True] * 7, [True] * 4 + [False] * 3]))
    outputs = {}
    for mode in ("joint", "separate"):
        torch.manual_seed(0)
        model = MDMDenoiser.from_preset("tiny_order", text_attention=mode, **TINY_MDM).eval()
        model.save_pretrained(tmp_path / mode)
        loaded = MDMDenoiser.from_pretrained(tmp_path / mode).eval()
        assert loaded.config.text_attention == mode
        outputs[mode] = model(x, t, torch.randn(2, 384).zero_(), frame_mask=frames, **text)
        torch.testing.assert_close(loaded(x, t, torch.zeros(2, 384), frame_mask=frames, **text), outputs[mode])
    assert not torch.allclose(outputs["joint"], outputs["separate"], atol=1e-4)  # same weights, other attention
    config_path = tmp_path / "joint" / "config.json"
    config = json.loads(config_path.read_text())
    for field in ("text_attention", "pooled_condition"):  # what a folder saved before these fields holds
        config.pop(field)
    config_path.write_text(json.dumps(config))
    old = MDMDenoiser.from_pretrained(tmp_path / "joint").eval()
    assert old.config.text_attention == "joint" and old.config.pooled_condition
    torch.testing.assert_close(old(x, t, torch.zeros(2, 384), frame_mask=frames, **text), outputs["joint"])
    with pytest.raises(ValueError, match="text_attention"):
        MDMDenoiser(text_conditioning="tokens", text_attention="sideways")


@pytest.mark.parametrize("overrides", [dict(text_attention="cross"), dict(text_attention="joint"), dict(pooled_condition=False)])
def test_other_text_attention_modes_mask_padding_and_drop_the_text(overrides):
    torch.manual_seed(0)
    model = MDMDenoiser.from_preset("tiny_order", **TINY_MDM, **overrides).eval()
    x, t, pooled = torch.randn(2, 20, 61), torch.tensor([10, 500]), torch.randn(2, 384)
    states, mask = torch.randn(2, 6, 384), torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    out = model(x, t, pooled, encoder_token_states=states, encoder_attention_mask=mask)
    garbage = states.clone()
    garbage[1, 3:] = 50.0
    torch.testing.assert_close(model(x, t, pooled, encoder_token_states=garbage, encoder_attention_mask=mask), out)
    assert not torch.allclose(model(x, t, pooled, encoder_token_states=states.flip(1)), out, atol=1e-4)
    drop = torch.tensor([True, True])
    dropped = model(x, t, pooled, cond_drop_mask=drop, encoder_token_states=states, encoder_attention_mask=mask)
    other = model(x, t, torch.randn(2, 384), cond_drop_mask=drop, encoder_token_states=torch.randn(2, 2, 384))
    torch.testing.assert_close(dropped, other)
    assert torch.isfinite(dropped).all()
    if overrides.get("pooled_condition") is False:
        assert model.text_proj is None
        with pytest.raises(ValueError, match="pooled_condition"):
            MDMDenoiser(pooled_condition=False)


def make_mdm_pipe(text_encoder, preset="tiny_order"):
    torch.manual_seed(0)
    tokenizer, encoder = text_encoder
    pipe = Express4DMDMPipeline.from_components(MDMDenoiser.from_preset(preset, **TINY_MDM), text_encoder=encoder,
                                                tokenizer=tokenizer)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    return pipe


def test_order_aware_mdm_pipeline_samples_saves_and_reloads(text_encoder, tmp_path):
    pipe = make_mdm_pipe(text_encoder)
    assert pipe.uses_text_tokens
    kwargs = dict(num_inference_steps=3, output_type="pt")
    together = pipe(PROMPTS, num_frames=[40, 25], generator=gens(0, 1), **kwargs).motions
    alone = pipe(PROMPTS[1:], num_frames=[25], generator=gens(1), **kwargs).motions
    torch.testing.assert_close(together[1, :25], alone[0], atol=1e-4, rtol=1e-4)  # text padding is invisible
    swapped = pipe(["A person is frowning and then blinking twice"], num_frames=[25], generator=gens(1), **kwargs).motions
    assert not torch.allclose(swapped, alone, atol=1e-4)
    negative = pipe(PROMPTS, num_frames=30, negative_prompt="A person is frowning", num_motions_per_prompt=2,
                    generator=gens(0, 1, 2, 3), **kwargs).motions  # fmt: skip
    assert negative.shape == (4, 30, 61) and torch.isfinite(negative).all()
    for scale in (0.0, 1.0):
        assert torch.isfinite(pipe(PROMPTS, num_frames=30, guidance_scale=scale, **kwargs).motions).all()
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = Express4DMDMPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.uses_text_tokens and "order-aware" in (tmp_path / "pipe" / "README.md").read_text()
    torch.testing.assert_close(loaded(PROMPTS[1:], num_frames=[25], generator=gens(1), **kwargs).motions, alone)


def test_fast_sampling_on_cpu_keeps_the_order_aware_results(text_encoder):
    pipe = make_mdm_pipe(text_encoder)
    kwargs = dict(num_frames=[40, 25], num_inference_steps=3, output_type="pt")
    eager = pipe(PROMPTS, generator=gens(0, 1), **kwargs).motions
    pipe.enable_fast_sampling()  # on a CPU: nothing recorded, same results
    torch.testing.assert_close(pipe(PROMPTS, generator=gens(0, 1), **kwargs).motions, eager)
    pipe.disable_fast_sampling()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_carries_token_states(cuda_text_encoder):
    pipe = make_mdm_pipe(cuda_text_encoder).to("cuda")
    kwargs = dict(num_frames=[60, 33], num_inference_steps=8, output_type="pt")
    eager = pipe(PROMPTS, generator=gens(0, 1), **kwargs).motions
    pipe.enable_fast_sampling(dtype=torch.float32)
    first = pipe(PROMPTS, generator=gens(0, 1), **kwargs).motions  # records the text encoder and the loop
    other = pipe(PROMPTS[::-1], generator=gens(0, 1), **kwargs).motions  # replays with other token states
    torch.testing.assert_close(first, eager, atol=2e-3, rtol=2e-3)
    pipe.disable_fast_sampling()
    reference = pipe(PROMPTS[::-1], generator=gens(0, 1), **kwargs).motions
    torch.testing.assert_close(other, reference, atol=2e-3, rtol=2e-3)
    pipe.to("cpu")


# --- T2M-GPT ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text_attention", ["separate", "joint"])
def test_order_aware_gpt_cache_matches_full_forward_and_masks_padding(text_attention):
    torch.manual_seed(0)
    gpt = T2MGPT.from_preset("tiny_order", num_codes=32, hidden_size=64, text_attention=text_attention).eval()
    codes, pooled = torch.randint(0, 32, (2, 9)), torch.randn(2, 384)
    states, mask = torch.randn(2, 6, 384), torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    full, _ = gpt(codes, pooled, text_token_states=states, text_mask=mask)
    first, cache = gpt(codes[:, :4], pooled, text_token_states=states, text_mask=mask, use_cache=True)
    step, cache = gpt(codes[:, 4:5], None, past_key_values=cache, use_cache=True, text_mask=mask)
    rest, _ = gpt(codes[:, 5:], None, past_key_values=cache, use_cache=True, text_mask=mask)
    torch.testing.assert_close(torch.cat([first, step, rest], 1), full, atol=1e-5, rtol=1e-5)
    garbage = states.clone()
    garbage[1, 3:] = 50.0
    torch.testing.assert_close(gpt(codes, pooled, text_token_states=garbage, text_mask=mask)[0], full)
    assert not torch.allclose(gpt(codes, pooled, text_token_states=states.flip(1))[0], full, atol=1e-4)
    with pytest.raises(ValueError, match="order-aware"):
        gpt(codes, pooled)
    a = gpt.generate(pooled, text_token_states=states, text_mask=mask, max_codes=8, generator=gens(0, 1))
    b = gpt.generate(pooled, text_token_states=states, text_mask=mask, max_codes=8, generator=gens(0, 1), use_cache=False)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    textless = torch.zeros_like(mask)  # every token masked: a row with no text attends to nothing there, no NaN
    out, _ = gpt(codes, pooled, text_token_states=states, text_mask=textless)
    assert torch.isfinite(out).all()
    if text_attention == "separate":  # then the text adds exactly nothing: any token states give the same logits
        torch.testing.assert_close(gpt(codes, pooled, text_token_states=torch.randn(2, 6, 384), text_mask=textless)[0], out)


def test_additive_separate_mask_is_aligned_and_attends_like_the_boolean_one():
    """The GPT's additive mask (every stride but the last a multiple of 16, so SDPA's CUDA kernel needs no copy per layer)
    selects the same keys as the boolean mask, a text-less row included."""
    from express4d_hf.models.text import attention_dtype, separate_text_masks

    mask = torch.tensor([[True] * 5 + [False] * 14, [False] * 19, [True] * 19])
    boolean, has_text = separate_text_masks(mask)
    additive, has_text_too = separate_text_masks(mask, torch.float32)
    assert additive.dtype == torch.float32 and additive.shape == boolean.shape == (3, 1, 1, 19)
    # what SDPA's memory-efficient kernel checks before it pads the mask again (aten's aligned_tensor)
    assert all(stride % 16 == 0 for stride in additive.stride()[:-1]) and additive.stride(-1) == 1
    assert torch.equal(additive == 0, boolean) and torch.equal(has_text, has_text_too) and has_text.flatten().tolist() == [True, False, True]
    q, k, v = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 19, 8), torch.randn(3, 2, 19, 8)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=additive),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=boolean))  # fmt: skip
    x = torch.randn(2, 3)
    assert attention_dtype(x) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention_dtype(x) == torch.bfloat16


def test_separate_gpt_runs_under_bf16_autocast():
    torch.manual_seed(0)
    gpt = T2MGPT.from_preset("tiny_order", num_codes=32, hidden_size=64).train()
    codes, pooled = torch.randint(0, 32, (2, 9)), torch.randn(2, 384)
    states, mask = torch.randn(2, 6, 384), torch.tensor([[True] * 6, [False] * 6])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = gpt.compute_loss(codes, torch.tensor([9, 5]), pooled, text_token_states=states, text_mask=mask).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in gpt.parameters() if p.grad is not None)


def test_gpt_text_attention_is_saved_and_old_order_aware_configs_load_as_joint(tmp_path):
    """The order-aware presets attend to the text in a softmax of their own; a GPT folder saved before the field
    existed loads with the joint softmax it was trained with (same logits as before)."""
    import json

    assert T2MGPT.from_preset("tiny_order").config.text_attention == "separate"
    assert T2MGPT.from_preset("paper_order", num_layers=1).config.text_attention == "separate"
    assert T2MGPT.from_preset("tiny").config.text_attention == "joint"  # unused without token states
    codes, pooled = torch.randint(0, 32, (2, 7)), torch.randn(2, 384)
    text = dict(text_token_states=torch.randn(2, 5, 384), text_mask=torch.tensor([[True] * 5, [True] * 2 + [False] * 3]))
    logits = {}
    for mode in ("joint", "separate"):
        torch.manual_seed(0)
        gpt = T2MGPT.from_preset("tiny_order", num_codes=32, hidden_size=64, text_attention=mode).eval()
        gpt.save_pretrained(tmp_path / mode)
        logits[mode] = gpt(codes, pooled, **text)[0]
        torch.testing.assert_close(T2MGPT.from_pretrained(tmp_path / mode).eval()(codes, pooled, **text)[0], logits[mode])
    assert not torch.allclose(logits["joint"], logits["separate"], atol=1e-4)  # same weights, other attention
    config_path = tmp_path / "joint" / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("text_attention")
    config_path.write_text(json.dumps(config))
    old = T2MGPT.from_pretrained(tmp_path / "joint").eval()
    assert old.config.text_attention == "joint"
    torch.testing.assert_close(old(codes, pooled, **text)[0], logits["joint"])
    with pytest.raises(ValueError, match="text_attention"):
        T2MGPT(text_conditioning="tokens", text_attention="cross")


def test_order_aware_t2m_gpt_pipeline_round_trip(text_encoder, tmp_path):
    torch.manual_seed(0)
    tokenizer, encoder = text_encoder
    gpt = T2MGPT.from_preset("tiny_order", num_codes=32, hidden_size=64)
    pipe = Express4DT2MGPTPipeline.from_components(MotionVQVAE.from_preset("tiny", num_codes=32), gpt,
                                                   text_encoder=encoder, tokenizer=tokenizer)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    motions = pipe(PROMPTS, num_frames=[40, 24], generator=gens(0, 1)).motions
    assert [m.num_frames for m in motions] == [40, 24]
    pipe.save_pretrained(tmp_path / "gpt")
    loaded = Express4DT2MGPTPipeline.from_pretrained(tmp_path / "gpt")
    assert loaded.uses_text_tokens and loaded.transformer.config.text_conditioning == "tokens"
    again = loaded(PROMPTS, num_frames=[40, 24], generator=gens(0, 1)).motions
    np.testing.assert_allclose(again[1].values, motions[1].values, atol=1e-5)


def test_order_by_checkpoint_scores_every_kept_weight_file(text_encoder, tmp_path):
    """``bench/order_by_checkpoint.py`` probes each ``weights/step_*.safetensors`` of a pipeline folder: one row per
    kept file, in step order, each with its accuracy inside its bootstrap interval."""
    import importlib.util
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    script = Path(__file__).resolve().parents[1] / "bench" / "order_by_checkpoint.py"
    spec = importlib.util.spec_from_file_location("order_by_checkpoint", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    tokenizer, encoder = text_encoder
    gpt = T2MGPT.from_preset("tiny_order", num_codes=32, hidden_size=64)
    pipe = Express4DT2MGPTPipeline.from_components(MotionVQVAE.from_preset("tiny", num_codes=32), gpt,
                                                   text_encoder=encoder, tokenizer=tokenizer)  # fmt: skip
    pipe.save_pretrained(tmp_path / "gpt")
    (tmp_path / "gpt" / "weights").mkdir()
    for step in (5, 10):
        torch.manual_seed(step)
        other = T2MGPT.from_preset("tiny_order", num_codes=32, hidden_size=64)
        save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "gpt" / "weights" / f"step_{step}.safetensors"))
    assert module.main([str(tmp_path / "gpt"), "--json", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["folders"][str(tmp_path / "gpt")]
    assert [row["step"] for row in rows] == [5, 10]
    assert all(0.0 <= row["ci"][0] <= row["order_accuracy"] <= row["ci"][1] <= 1.0 for row in rows)


# --- trainers' caches --------------------------------------------------------------------------------------
def test_caption_table_carries_token_states(text_encoder):
    from express4d_hf.training.common import embed_caption_set
    from express4d_hf.training.mdm import CaptionTable

    tokenizer, encoder = text_encoder
    captions = ["A person blinks", "A person first smiles and then frowns deeply"]
    pooled_only = CaptionTable(embed_caption_set(captions, tokenizer, encoder, progress=False))
    assert not pooled_only.has_tokens and pooled_only.condition(captions, torch.device("cpu")) == {}
    table = CaptionTable(embed_caption_set(captions, tokenizer, encoder, progress=False, with_tokens=True))
    states, mask = table.lookup_tokens(captions[::-1], torch.device("cpu"))
    reference = encode_prompts(tokenizer, encoder, captions[::-1])
    torch.testing.assert_close(states[mask], reference.states[reference.mask])
    torch.testing.assert_close(table.lookup(captions, torch.device("cpu")), pooled_only.lookup(captions, torch.device("cpu")))
    one, one_mask = table.lookup_tokens(captions[:1], torch.device("cpu"))
    assert one_mask.all() and one.shape[1] == int(reference.mask[1].sum())  # cut to the batch's longest


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from express4d_hf.data.hub import build_dataset
    from express4d_hf.data.synthetic import synthesize_release

    root = tmp_path_factory.mktemp("order_data")
    release = synthesize_release(root / "release", num_clips=40, participants=3, seed=0, progress=False)
    return build_dataset(release, root / "dataset", progress=False)


def test_trainers_build_order_aware_models(tiny_dataset, tmp_path, text_encoder):
    from express4d_hf.training.mdm import MDMTrainConfig, train_mdm
    from express4d_hf.training.t2m_gpt import GPTTrainConfig, VQVAETrainConfig, train_t2m_gpt

    mdm_cfg = MDMTrainConfig.preset("tiny", model_preset="tiny_order", batch_size=8, sample_every=0).with_max_steps(2)
    pipe = train_mdm(tiny_dataset, tmp_path / "mdm", mdm_cfg, text_encoder=text_encoder, progress=False)
    assert Express4DMDMPipeline.from_pretrained(tmp_path / "mdm").uses_text_tokens and pipe.uses_text_tokens
    vq_cfg = VQVAETrainConfig.preset("tiny", batch_size=8).with_max_steps(2)
    gpt_cfg = GPTTrainConfig.preset("tiny", model_preset="tiny_order", batch_size=8, sample_every=0).with_max_steps(2)
    gpt = train_t2m_gpt(tiny_dataset, tmp_path / "gpt", vq_cfg, gpt_cfg, text_encoder=text_encoder, progress=False)
    assert gpt.uses_text_tokens
    assert Express4DT2MGPTPipeline.from_pretrained(tmp_path / "gpt").transformer.config.text_conditioning == "tokens"
    # the cached caption file holds the token states; a second run reads it back
    from express4d_hf.training.t2m_gpt import CAPTIONS_NAME, cached_caption_embeddings

    tokenizer, encoder = text_encoder
    table = cached_caption_embeddings(["A person blinks"], tokenizer, encoder, tmp_path / CAPTIONS_NAME, False, True)
    again = cached_caption_embeddings(["A person blinks"], tokenizer, encoder, tmp_path / CAPTIONS_NAME, False, True)
    torch.testing.assert_close(again["A person blinks"][1], table["A person blinks"][1])


# --- order-swapped control ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("caption", "swapped"), [
    ("A person is squinting briefly and then opening their eyes wide", "A person is opening their eyes wide and then squinting briefly"),
    ("A person is puffing their cheeks slowly, then turning their head to the right",
     "A person is turning their head to the right, then puffing their cheeks slowly"),
    ("A person is blinking, smiling, and finally frowning", "A person is frowning, smiling, and finally blinking"),
    ("A person is nodding before shaking their head.", "A person is shaking their head before nodding."),
    ("A person is smiling while looking up", None),
    ("A person is smiling", None),
])  # fmt: skip
def test_swap_steps_rule(caption, swapped):
    assert swap_steps(caption) == swapped


def test_split_steps_keeps_simultaneous_parts_together():
    subject, steps, connectors, _ = split_steps("A person is smiling while looking up, then frowning")
    assert subject == "A person is " and steps == ["smiling while looking up", "frowning"] and connectors == [", then "]


class WordOrderEvaluator:
    """A stand-in evaluator whose text embedding reads the first word after "is" and whose motion embedding
    is stored in the clip: the swapped caption points elsewhere."""

    def embed_texts(self, captions):
        return np.stack([self._vec(c.split(" is ")[-1].split()[0]) for c in captions])

    def embed_motions(self, motions):
        return np.stack([self._vec(m.metadata["first"]) for m in motions])

    @staticmethod
    def _vec(word):
        return np.random.default_rng(abs(hash(word)) % 2**32).normal(size=16)


def test_order_swapped_control_uses_the_multi_step_subset():
    words = ["blinking", "smiling", "frowning", "nodding", "squinting", "pouting", "sneering", "winking"]
    clips = []
    for i in range(80):
        a, b = words[i % 8], words[(i // 8 + i + 1) % 8]
        caption = f"A person is {a} and then {b}" if i % 3 else f"A person is {a}"
        clips.append(FaceMotion(np.zeros((30, 61)), fps=20.0, caption=caption, metadata={"first": a}))
    subset = multi_step_subset(clips, 32)
    assert len(subset) == 32 and all(" and then " in c.caption for c in subset)
    real, swapped = evaluate_order_swapped(subset, WordOrderEvaluator(), replications=2, progress=False)
    assert real.mean("r_precision_top3") > swapped.mean("r_precision_top3")
    assert swapped.info["captions"] == "captions with the steps swapped"
    with pytest.raises(ValueError, match="single-step"):
        evaluate_order_swapped(clips[:32], WordOrderEvaluator(), replications=1, progress=False)
    with pytest.raises(ValueError, match="fewer than one group"):
        multi_step_subset(clips[:10], 32)


# --- order probe -----------------------------------------------------------------------------------------
def test_probes_are_written_two_step_instructions_naming_both_steps_channels():
    from express4d_hf.data.synthetic import known_caption_words

    assert len(ORDER_PROBES) >= 24 and len({p.caption for p in ORDER_PROBES}) == len(ORDER_PROBES)
    for probe in ORDER_PROBES:
        assert probe.first and probe.second and not set(probe.first) & set(probe.second)
        assert not probe.caption.startswith("A person is ")  # not the corpus's "A person is ...ing" template
    unseen = {w.strip(",.").lower() for p in ORDER_PROBES for w in p.caption.split()} - known_caption_words()
    assert {"smiles", "frowns", "afterwards"} <= unseen  # verbs and connectives the corpus never uses
    with pytest.raises(ValueError, match="unknown ARKit"):
        OrderProbe("x", ("Smile",), ("JawOpen",))


def test_probe_rule_and_accuracy_interval():
    probe = ORDER_PROBES[0]  # smile then frown
    values = np.zeros((120, 61))
    from express4d_hf.core.arkit import CHANNEL_INDEX

    for name in probe.first:
        values[:60, CHANNEL_INDEX[name]] = 0.5
    for name in probe.second:
        values[60:, CHANNEL_INDEX[name]] = 0.5
    good = FaceMotion(values, fps=20.0)
    bad = FaceMotion(values[::-1].copy(), fps=20.0)
    assert probe_passes([good] * 4, probe)[0] and not probe_passes([bad] * 4, probe)[0]
    assert not probe_passes([good, bad, bad, bad], probe)[0]  # averaged over samples
    assert bootstrap_interval([True] * 10) == (1.0, 1.0)
    low, high = bootstrap_interval([True, False] * 12)
    assert low < 0.5 < high


def test_order_probe_scores_the_reference_and_a_reversing_generator():
    reference = reference_generator(seed=0)
    result = order_probe(reference, samples=2)
    assert result.accuracy == 1.0 and result.cell() == "1.00 [1.00, 1.00]"

    def backwards(captions, num_frames, seeds):
        return [FaceMotion(m.values[::-1].copy(), fps=m.fps, caption=m.caption) for m in reference(captions, num_frames, seeds)]

    assert order_probe(backwards, samples=2).accuracy == 0.0


@pytest.mark.parametrize("text_attention", ["joint", "separate", "cross"])
def test_text_memory_computed_once_gives_the_same_prediction(text_attention):
    """A sampler computes the text's keys and values once per call (``text_memory``): every step's prediction
    equals the forward that projects the token states itself, dropped (unconditional) rows included."""
    torch.manual_seed(0)
    model = MDMDenoiser.from_preset("tiny_order", text_attention=text_attention).eval()
    states, mask = torch.randn(4, 9, 384), torch.arange(9)[None] < torch.tensor([[9], [5], [7], [3]])
    drop = torch.tensor([False, True, False, True])
    x, t, pooled = torch.randn(4, 40, 61), torch.tensor([5, 300, 700, 999]), torch.randn(4, 384)
    memory = model.text_memory(states, mask, drop)
    with torch.no_grad():
        direct = model(x, t, pooled, cond_drop_mask=drop, encoder_token_states=states, encoder_attention_mask=mask)
        for step in (t, t.flip(0)):  # reused across steps
            cached = model(x, step, pooled, cond_drop_mask=drop, text_memory=memory)
            if step is t:
                torch.testing.assert_close(cached, direct, rtol=0, atol=0)
        no_text = model(x, t, pooled, cond_drop_mask=torch.ones(4, dtype=torch.bool), encoder_token_states=states)
    assert torch.isfinite(no_text).all()
    with pytest.raises(ValueError, match="holds 4 samples' text; the batch has 2"):
        model(x[:2], t[:2], pooled[:2], text_memory=memory)
