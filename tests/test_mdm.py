"""MDM baseline: denoiser, pipeline (sampling, CFG, lengths, schedulers, save/load), training command."""

from __future__ import annotations

import json


import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from card_snippets import run_card_snippet
from express4d_hf import read_livelink_csv
from express4d_hf.core.stats import NormStats
from express4d_hf.models.mdm import MDMDenoiser
from express4d_hf.models.normalizer import MotionNormalizer
from express4d_hf.evaluation.scoring import pipeline_generate_fn
from express4d_hf.pipelines.common import MotionBatchOutput, MotionPipelineOutput
from express4d_hf.pipelines.loading import PipelineLoadError, load_pipeline
from express4d_hf.pipelines.mdm import (
    DDPM_NOISE_CHUNK_STEPS,
    AncestralNoise,
    Express4DMDMPipeline,
    ddpm_step_with_noise,
    draws_ancestral_noise,
    is_replayable,
    make_scheduler,
    rescale_guidance,
    takes_step_noise,
)
from express4d_hf.models.text import encode_prompts, pool_token_states, tokenize_prompts
from express4d_hf.livelink import write_livelink_csv

TINY = dict(num_layers=2, hidden_size=64, ff_size=128, num_heads=4)
PROMPTS = ["A person is smiling softly", "A person is blinking twice and then frowning"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this file runs its tiny models on one thread."""


def make_pipe(text_encoder, seed: int = 0, **overrides) -> Express4DMDMPipeline:
    torch.manual_seed(seed)
    denoiser = MDMDenoiser.from_preset("tiny", **{**TINY, **overrides})
    rng = np.random.default_rng(seed)
    stats = NormStats(rng.uniform(0, 0.3, 61), rng.uniform(0.05, 0.2, 61))
    tokenizer, encoder = text_encoder
    pipe = Express4DMDMPipeline.from_components(
        denoiser, MotionNormalizer.from_stats(stats), text_encoder=encoder, tokenizer=tokenizer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(text_encoder):
    return make_pipe(text_encoder)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- denoiser ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("frames_per_token", "output_smoothing"), [(1, 0), (2, 0), (4, 9)])
def test_denoiser_shapes_and_padding_independence(frames_per_token, output_smoothing):
    torch.manual_seed(0)
    model = MDMDenoiser.from_preset("tiny", **TINY, frames_per_token=frames_per_token, output_smoothing=output_smoothing)
    model.eval()
    x = torch.randn(2, 31, 61)
    mask = torch.arange(31)[None] < torch.tensor([[31], [18]])  # 18: a token straddles the clip's end
    text = torch.randn(2, model.config.text_dim)
    out = model(x, torch.tensor([3, 900]), text, frame_mask=mask)
    assert out.shape == (2, 31, 61)
    # frames past a clip's length must not influence its valid frames...
    x2 = x.clone()
    x2[1, 18:] = 50.0
    out2 = model(x2, torch.tensor([3, 900]), text, frame_mask=mask)
    torch.testing.assert_close(out2[1, :18], out[1, :18])
    torch.testing.assert_close(out2[0], out[0])
    # ... nor does the amount of padding
    alone = model(x[1:, :18], torch.tensor([900]), text[1:])
    torch.testing.assert_close(alone[0], out[1, :18], atol=1e-5, rtol=1e-4)
    # dropping the condition equals a zero text embedding, and changes the prediction
    dropped = model(x, 3, text, frame_mask=mask, cond_drop_mask=torch.tensor([True, False]))
    torch.testing.assert_close(dropped[0], model(x[:1], 3, torch.zeros(1, text.shape[1]), frame_mask=mask[:1])[0])
    assert not torch.allclose(dropped[0], out[0])


def test_denoiser_rejects_bad_inputs():
    model = MDMDenoiser.from_preset("tiny", **TINY)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 20, 60), 1, torch.randn(1, 384))
    with pytest.raises(ValueError, match="pooled text"):
        model(torch.randn(1, 20, 61), 1, torch.randn(1, 5, 384))
    with pytest.raises(ValueError, match="at most 196"):
        model(torch.randn(1, 200, 61), 1, torch.randn(1, 384))
    with pytest.raises(ValueError, match="preset"):
        MDMDenoiser.from_preset("huge")


# --- pipeline ---------------------------------------------------------------------------------------
def test_shapes_lengths_and_captions(pipe):
    out = pipe(PROMPTS, num_frames=[30, 45], num_inference_steps=4, generator=gen(0))
    assert isinstance(out, MotionPipelineOutput)
    assert [m.num_frames for m in out.motions] == [30, 45]
    assert [m.caption for m in out.motions] == PROMPTS
    for motion in out.motions:
        assert motion.fps == 20 and motion.values.shape[1] == 61 and np.isfinite(motion.values).all()
    out = pipe(PROMPTS[0], duration_s=2.5, num_motions_per_prompt=2, num_inference_steps=2, generator=gen(0))
    assert [m.num_frames for m in out.motions] == [50, 50]
    assert not np.allclose(out.motions[0].values, out.motions[1].values)  # two samples, not one copy


def test_determinism_with_generator(pipe):
    a = pipe(PROMPTS, num_frames=30, num_inference_steps=4, generator=gen(7), output_type="pt").motions
    b = pipe(PROMPTS, num_frames=30, num_inference_steps=4, generator=gen(7), output_type="pt").motions
    c = pipe(PROMPTS, num_frames=30, num_inference_steps=4, generator=gen(8), output_type="pt").motions
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_guidance_changes_output(pipe):
    kwargs = dict(num_frames=30, num_inference_steps=4, output_type="pt")
    guided = pipe(PROMPTS[0], guidance_scale=2.5, generator=gen(1), **kwargs).motions
    plain = pipe(PROMPTS[0], guidance_scale=1.0, generator=gen(1), **kwargs).motions
    negative = pipe(
        PROMPTS[0], guidance_scale=2.5, negative_prompt="A person is frowning", generator=gen(1), **kwargs
    ).motions
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain, atol=1e-4)
    assert not torch.allclose(guided, negative, atol=1e-4)


def test_variable_lengths_in_one_batch_match_single_generation(pipe):
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)  # deterministic sampler
    try:
        generate = pipeline_generate_fn(pipe, num_inference_steps=4)  # the protocol's adapter: one seed per clip
        together = generate(PROMPTS, [24, 61], [3, 4])
        alone = generate(PROMPTS[:1], [24], [3])
    finally:
        pipe.scheduler = make_scheduler("ddpm", pipe.scheduler.config)
    assert [m.num_frames for m in together] == [24, 61]
    np.testing.assert_allclose(together[0].values, alone[0].values, atol=1e-4)


def test_batch_output_types_zero_past_length(pipe):
    out = pipe(PROMPTS, num_frames=[20, 33], num_inference_steps=2, generator=gen(0), output_type="pt")
    assert isinstance(out, MotionBatchOutput) and out.lengths == [20, 33] and out.motions.shape == (2, 33, 61)
    assert out.motions[0, 20:].abs().max() == 0 and out.motions[0, :20].abs().max() > 0
    latent = pipe(PROMPTS, num_frames=[20, 33], num_inference_steps=2, generator=gen(0), output_type="latent").motions
    raw = pipe.normalizer.denormalize(latent)
    torch.testing.assert_close(raw[1], out.motions[1])
    array, lengths = pipe(PROMPTS, num_frames=[20, 33], num_inference_steps=2, output_type="np", return_dict=False)
    assert isinstance(array, np.ndarray) and lengths == [20, 33]


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "sde-dpmsolver++"])
def test_scheduler_swap(text_encoder, name):
    pipe = make_pipe(text_encoder)
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    assert pipe.scheduler.config.prediction_type == "sample"
    out = pipe(PROMPTS, num_frames=[25, 40], num_inference_steps=6, generator=gen(0))
    assert all(np.isfinite(m.values).all() for m in out.motions)
    # the plain diffusers way works too
    cls = DDIMScheduler if name == "ddim" else DPMSolverMultistepScheduler
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    assert np.isfinite(pipe(PROMPTS[0], num_frames=25, num_inference_steps=5).motions[0].values).all()


def test_replayable_schedulers_and_step_noise(pipe):
    config = pipe.scheduler.config
    assert not is_replayable(make_scheduler("ddpm", config))  # draws its own noise inside step()
    for name in ("ddim", "dpmsolver++", "sde-dpmsolver++"):
        assert is_replayable(make_scheduler(name, config))
    assert not takes_step_noise(make_scheduler("ddim", config)) and takes_step_noise(make_scheduler("ddim", config), 0.5)
    assert not takes_step_noise(make_scheduler("dpmsolver++", config))
    assert takes_step_noise(make_scheduler("sde-dpmsolver++", config))
    assert make_scheduler("sde-dpmsolver++", config).config.algorithm_type == "sde-dpmsolver++"


def test_sde_dpmsolver_is_seeded_and_batch_independent(text_encoder):
    pipe = make_pipe(text_encoder)
    pipe.scheduler = make_scheduler("sde-dpmsolver++", pipe.scheduler.config)
    kwargs = dict(num_inference_steps=5, output_type="pt")
    batch = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], **kwargs).motions
    again = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], **kwargs).motions
    alone = pipe(PROMPTS[1], num_frames=25, generator=[gen(1)], **kwargs).motions
    torch.testing.assert_close(batch, again)
    torch.testing.assert_close(alone[0], batch[1, :25], atol=1e-5, rtol=1e-5)  # step noise drawn per clip
    pipe.scheduler = make_scheduler("dpmsolver++", pipe.scheduler.config)
    ode = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], **kwargs).motions
    assert not torch.allclose(ode, batch)  # same start, but the SDE adds noise every step


@pytest.mark.parametrize(
    "config",
    [dict(), dict(variance_type="fixed_large"), dict(variance_type="fixed_small_log"),
     dict(prediction_type="epsilon", clip_sample=True), dict(prediction_type="v_prediction"),
     dict(prediction_type="epsilon", thresholding=True, beta_schedule="linear")],
)  # fmt: skip
def test_ddpm_step_with_noise_equals_diffusers_step(config):
    """The pipeline's DDPM step with its own noise is diffusers' DDPMScheduler.step given the same noise."""
    base = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample", clip_sample=False)
    scheduler = DDPMScheduler(**{**base, **config})
    scheduler.set_timesteps(50)
    model_output, sample = torch.randn(2, 2, 30, 61).unbind()
    assert draws_ancestral_noise(scheduler)
    for t in [scheduler.timesteps[0], scheduler.timesteps[25], scheduler.timesteps[-1]]:  # t = 0 adds no noise
        expected = scheduler.step(model_output, t, sample, generator=gen(7)).prev_sample
        noise = randn_tensor(model_output.shape, generator=gen(7))  # what step draws from that generator
        torch.testing.assert_close(ddpm_step_with_noise(scheduler, model_output, t, sample, noise), expected,
                                   rtol=0, atol=0)  # fmt: skip


def test_ddpm_step_with_noise_refuses_what_it_cannot_reproduce():
    learned = DDPMScheduler(variance_type="learned_range", prediction_type="sample")
    assert not draws_ancestral_noise(learned) and not draws_ancestral_noise(DDIMScheduler())
    learned.set_timesteps(10)
    x = torch.zeros(1, 4, 61)
    with pytest.raises(ValueError, match="variance_type"):
        ddpm_step_with_noise(learned, x, learned.timesteps[0], x, x)


def test_ddpm_noise_is_per_clip_batch_independent_and_seeded(text_encoder):
    """DDPM's ancestral noise is drawn by the pipeline per clip (AncestralNoise): a clip's result depends only on
    its own generator, not on its batch or its neighbours' lengths, across several chunks of steps."""
    pipe = make_pipe(text_encoder)
    assert type(pipe.scheduler) is DDPMScheduler
    steps = DDPM_NOISE_CHUNK_STEPS + 3  # two chunks of noise
    kwargs = dict(num_inference_steps=steps, output_type="pt")
    batch = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], **kwargs).motions
    again = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], **kwargs).motions
    alone = pipe(PROMPTS[1], num_frames=25, generator=[gen(1)], **kwargs).motions
    swapped = pipe(PROMPTS[::-1], num_frames=[25, 60], generator=[gen(1), gen(2)], **kwargs).motions
    torch.testing.assert_close(batch, again, rtol=0, atol=0)
    torch.testing.assert_close(alone[0], batch[1, :25], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(swapped[0, :25], batch[1, :25], atol=1e-5, rtol=1e-5)
    other = pipe(PROMPTS[1], num_frames=25, generator=[gen(9)], **kwargs).motions
    assert not torch.allclose(other[0], alone[0], atol=1e-3)
    # the protocol's adapter (one CPU generator per clip seeded with the clip's seed) gives the same clip anywhere
    generate = pipeline_generate_fn(pipe, num_inference_steps=steps)
    together, single = generate(PROMPTS, [40, 25], [3, 4]), generate(PROMPTS[1:], [25], [4])
    np.testing.assert_allclose(together[1].values, single[0].values, atol=1e-5)


def test_ancestral_noise_draws_each_clip_at_full_length_in_chunks():
    """Step i's noise of a clip: its derived generator's draw of [chunk, full_frames, C] for i's chunk, cropped."""
    chunk, steps, full, channels = 4, 10, 12, 3
    noise = AncestralNoise([gen(0), gen(1)], 2, steps, full, channels, run_frames=5, device="cpu", chunk_steps=chunk)
    drawn = torch.stack([noise[i] for i in range(steps)])  # [steps, 2, 5, 3]
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=gen(1)).item())
    clip = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(min(chunk, steps - s), full, channels, generator=clip) for s in range(0, steps, chunk)]
    torch.testing.assert_close(drawn[:, 1], torch.cat(blocks)[:, :5], rtol=0, atol=0)
    alone = AncestralNoise([gen(1)], 1, steps, full, channels, run_frames=12, device="cpu", chunk_steps=chunk)
    torch.testing.assert_close(torch.stack([alone[i][0, :5] for i in range(steps)]), drawn[:, 1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="generators"):
        AncestralNoise([gen(0)], 2, steps, full, channels, 5, "cpu")


@pytest.mark.parametrize(("guidance", "eta", "rescale"), [(2.5, 0.0, 0.0), (1.0, 0.0, 0.0), (2.5, 0.7, 0.0), (2.5, 0.0, 0.7)])
def test_full_length_padding_of_recorded_loops_leaves_clips_unchanged(text_encoder, monkeypatch, guidance, eta, rescale):
    """A recorded (CUDA-graph) loop always runs at the model's full length; the valid frames must not change."""
    pipe = make_pipe(text_encoder)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    kwargs = dict(num_frames=[40, 25], num_inference_steps=4, guidance_scale=guidance, eta=eta,
                  guidance_rescale=rescale, output_type="pt")  # fmt: skip
    eager = pipe(PROMPTS, generator=[gen(0), gen(1)], **kwargs)
    seen = []

    def replay_without_graph(steps, guidance_scale, rescale, step_kwargs, **inputs):  # the recorded loop's computation
        seen.append(inputs["latents"].shape)
        return pipe._denoise(guidance=torch.tensor(guidance_scale), rescale=rescale, step_kwargs=step_kwargs,
                             progress=False, **inputs)  # fmt: skip

    monkeypatch.setattr(pipe, "_replays", lambda device: True)
    monkeypatch.setattr(pipe, "_replay", replay_without_graph)
    padded = pipe(PROMPTS, generator=[gen(0), gen(1)], **kwargs)
    assert seen == [(2, pipe.denoiser.config.max_frames, 61)]
    assert padded.motions.shape == eager.motions.shape == (2, 40, 61)
    torch.testing.assert_close(padded.motions, eager.motions, atol=1e-4, rtol=1e-4)


def test_rescale_guidance_matches_the_conditional_spread_over_valid_frames():
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(2, 30, 61, generator=g)
    guided = 3.0 * cond + 0.5  # over-dispersed, shifted
    mask = torch.arange(30)[None] < torch.tensor([[30], [18]])
    full = rescale_guidance(guided, cond, mask, 1.0)
    for clip, length in enumerate((30, 18)):
        torch.testing.assert_close(full[clip, :length].std(unbiased=False), cond[clip, :length].std(unbiased=False))
    torch.testing.assert_close(rescale_guidance(guided, cond, mask, 0.0), guided)
    torch.testing.assert_close(rescale_guidance(guided, cond, mask, 0.5), 0.5 * full + 0.5 * guided)
    padded = guided.clone()
    padded[1, 18:] = 1e3  # whatever the padding holds, the valid frames do not change
    torch.testing.assert_close(rescale_guidance(padded, cond, mask, 1.0)[1, :18], full[1, :18])


def test_guidance_rescale_in_the_pipeline(text_encoder):
    pipe = make_pipe(text_encoder)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    kwargs = dict(num_frames=[40, 25], num_inference_steps=4, guidance_scale=4.0, output_type="pt")
    plain = pipe(PROMPTS, generator=[gen(0), gen(1)], **kwargs).motions
    rescaled = pipe(PROMPTS, generator=[gen(0), gen(1)], guidance_rescale=0.7, **kwargs).motions
    assert not torch.allclose(plain, rescaled)
    alone = pipe(PROMPTS[1], num_frames=25, num_inference_steps=4, guidance_scale=4.0, output_type="pt",
                 generator=[gen(1)], guidance_rescale=0.7).motions  # fmt: skip
    torch.testing.assert_close(alone[0], rescaled[1, :25], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="guidance_rescale"):
        pipe(PROMPTS[0], num_frames=20, guidance_rescale=2.0)


def test_ddim_eta_is_seeded_batch_independent_and_validated(text_encoder):
    pipe = make_pipe(text_encoder)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    kwargs = dict(num_inference_steps=4, output_type="pt")
    noisy = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], eta=1.0, **kwargs).motions
    again = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], eta=1.0, **kwargs).motions
    alone = pipe(PROMPTS[1], num_frames=25, generator=[gen(1)], eta=1.0, **kwargs).motions
    plain = pipe(PROMPTS, num_frames=[40, 25], generator=[gen(0), gen(1)], **kwargs).motions
    torch.testing.assert_close(noisy, again)
    torch.testing.assert_close(alone[0], noisy[1, :25], atol=1e-5, rtol=1e-5)  # noise drawn per clip
    assert not torch.allclose(noisy, plain)  # eta adds noise
    with pytest.raises(ValueError, match="eta"):
        pipe(PROMPTS[0], num_frames=20, eta=1.5, **kwargs)
    pipe.scheduler = make_scheduler("dpmsolver++", pipe.scheduler.config)
    with pytest.raises(ValueError, match="applies to DDIM"):
        pipe(PROMPTS[0], num_frames=20, eta=0.5, **kwargs)


def test_fast_sampling_on_cpu_keeps_float32_and_results(text_encoder):
    pipe = make_pipe(text_encoder)
    pipe.scheduler = make_scheduler("dpmsolver++", pipe.scheduler.config)
    before = pipe(PROMPTS[0], num_frames=30, num_inference_steps=4, generator=gen(3), output_type="pt").motions
    pipe.enable_fast_sampling()  # no CUDA here: nothing to record, the dtype stays
    assert pipe.denoiser.dtype == torch.float32
    after = pipe(PROMPTS[0], num_frames=30, num_inference_steps=4, generator=gen(3), output_type="pt").motions
    torch.testing.assert_close(after, before)
    pipe.disable_fast_sampling()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "sde-dpmsolver++"])
def test_cuda_graph_replay_matches_the_eager_loop(cuda_text_encoder, name):
    pipe = make_pipe(cuda_text_encoder).to("cuda")
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    kwargs = dict(num_frames=[60, 33], num_inference_steps=8, output_type="pt")
    eager = pipe(PROMPTS, generator=[gen(0), gen(1)], **kwargs).motions
    pipe.enable_fast_sampling(dtype=torch.float32)
    first = pipe(PROMPTS, generator=[gen(0), gen(1)], **kwargs).motions  # records
    again = pipe(PROMPTS, generator=[gen(0), gen(1)], **kwargs).motions  # replays
    other = pipe(PROMPTS, generator=[gen(5), gen(6)], guidance_scale=4.0, **kwargs).motions  # new inputs, same graph
    assert len(pipe._graphs) == 2  # the text encoder and the loop, each recorded once
    torch.testing.assert_close(first, eager, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(again, first)
    assert not torch.allclose(other, first)
    pipe.disable_fast_sampling()
    reference = pipe(PROMPTS, generator=[gen(5), gen(6)], guidance_scale=4.0, **kwargs).motions
    torch.testing.assert_close(other, reference, atol=2e-3, rtol=2e-3)
    if name == "ddim":  # stochastic DDIM replays too: its noise is an input of the recording
        pipe.enable_fast_sampling(dtype=torch.float32)
        stochastic = pipe(PROMPTS, generator=[gen(0), gen(1)], eta=0.5, **kwargs).motions
        pipe.disable_fast_sampling()
        reference = pipe(PROMPTS, generator=[gen(0), gen(1)], eta=0.5, **kwargs).motions
        torch.testing.assert_close(stochastic, reference, atol=2e-3, rtol=2e-3)
        assert not torch.allclose(stochastic, eager)
    pipe.enable_fast_sampling()  # bf16
    assert pipe.denoiser.dtype == torch.bfloat16
    fast = pipe(PROMPTS, generator=[gen(0), gen(1)], **kwargs).motions
    assert torch.isfinite(fast).all() and (fast - eager).abs().mean() < 0.05 * eager.abs().mean()


def test_validation_errors(pipe):
    cases = [
        (dict(prompt=""), "empty"),
        (dict(prompt=["ok", "  "]), "prompt 1 is empty"),
        (dict(prompt="ok", num_frames=10), "outside"),
        (dict(prompt="ok", duration_s=30.0), "outside"),
        (dict(prompt="ok", num_frames=40, duration_s=2.0), "not both"),
        (dict(prompt=["a", "b"], num_frames=[40]), "lengths"),
        (dict(prompt="ok", guidance_scale=-1.0), "guidance_scale"),
        (dict(prompt="ok", num_inference_steps=0), "num_inference_steps"),
        (dict(prompt="ok", num_inference_steps=5000), "num_inference_steps"),
        (dict(prompt="ok", num_motions_per_prompt=0), "num_motions_per_prompt"),
        (dict(prompt="ok", output_type="gif"), "output_type"),
        (dict(prompt=["a", "b"], negative_prompt=["x"]), "negative prompts"),
        (dict(prompt="ok", num_frames=30, latents=torch.zeros(1, 29, 61)), "latents"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(num_inference_steps=kwargs.pop("num_inference_steps", 1), **kwargs)


def test_text_encoder_width_mismatch_is_explained(text_encoder):
    pipe = make_pipe(text_encoder, text_dim=512)
    with pytest.raises(ValueError, match="text encoder gives 384-d"):
        pipe("A person is smiling", num_frames=20, num_inference_steps=1)


def test_csv_export_reads_back_at_60fps(pipe, tmp_path):
    motion = pipe(PROMPTS[0], num_frames=40, num_inference_steps=2, generator=gen(0)).motions[0]
    write_livelink_csv(motion, tmp_path / "clip.csv")
    back = read_livelink_csv(tmp_path / "clip.csv")
    assert back.fps == 60 and back.num_frames == 120
    np.testing.assert_allclose(back.values, motion.resample(60).values, atol=1e-5)


def test_save_load_round_trip_is_bit_exact(text_encoder, tmp_path):
    pipe = make_pipe(text_encoder, seed=5)
    pipe.save_pretrained(tmp_path, model_card={"metrics": "R@3 = 0.5 (test)"})
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "Express4DMDMPipeline"
    assert index["denoiser"] == ["express4d_hf.models.mdm", "MDMDenoiser"]
    assert index["normalizer"] == ["express4d_hf.models.normalizer", "MotionNormalizer"]
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))  # safetensors only
    card = (tmp_path / "README.md").read_text()
    assert "R@3 = 0.5 (test)" in card and "deep-fake" in card and "$" not in card.split("```")[0]

    loaded = load_pipeline(tmp_path)
    assert type(loaded) is Express4DMDMPipeline and loaded.card_data["metrics"] == "R@3 = 0.5 (test)"
    loaded.set_progress_bar_config(disable=True)
    for name in ("denoiser", "normalizer", "text_encoder"):
        original, restored = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert original.keys() == restored.keys()
        for key in original:
            assert torch.equal(original[key], restored[key]), f"{name}.{key}"
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    kwargs = dict(num_frames=[30, 21], num_inference_steps=3, output_type="pt")
    a = pipe(PROMPTS, generator=gen(2), **kwargs).motions
    b = loaded(PROMPTS, generator=gen(2), **kwargs).motions
    assert torch.equal(a, b)


def test_load_pipeline_errors(tmp_path):
    with pytest.raises(PipelineLoadError, match="no model_index.json"):
        load_pipeline(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(PipelineLoadError, match="unknown pipeline class"):
        load_pipeline(tmp_path)
    with pytest.raises(PipelineLoadError, match="no such pipeline folder"):
        load_pipeline(tmp_path / "missing")


# --- training ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from express4d_hf.data.hub import build_dataset
    from express4d_hf.data.synthetic import synthesize_release

    root = tmp_path_factory.mktemp("mdm_data")
    release = synthesize_release(root / "release", num_clips=40, participants=3, seed=0, progress=False)
    return build_dataset(release, root / "dataset", progress=False)


def test_train_command_ends_in_loadable_folder_and_resumes(tiny_dataset, tmp_path):
    from express4d_hf.cli import main

    out = tmp_path / "run"
    common = ["train", "mdm", "--data", str(tiny_dataset), "--out", str(out), "--preset", "tiny", "--batch-size", "8"]
    assert main(common + ["--max-steps", "2"]) == 0
    assert main(common + ["--max-steps", "3"]) == 0  # resumes from the step-2 checkpoint
    for name in ("model_index.json", "README.md", "training_metadata.json", "mdm_loss.png", "denoiser", "normalizer"):
        assert (out / name).exists(), name
    assert (out / "checkpoints" / "step_3").is_dir()
    assert sorted(p.suffix for p in (out / "samples" / "step_3").iterdir()).count(".csv") >= 1
    losses = [json.loads(line) for line in (out / "mdm_losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == [2, 3]
    metadata = json.loads((out / "training_metadata.json").read_text())
    assert metadata["config"]["max_steps"] == 3 and metadata["config"]["model_preset"] == "tiny"

    pipe = Express4DMDMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.denoiser.config.frames_per_token == 4  # the tiny preset
    assert pipe.normalizer.std.min() > 0 and pipe.normalizer.mean.abs().sum() > 0  # real train stats
    motion = pipe("A person is smiling", num_frames=30, num_inference_steps=2).motions[0]
    assert motion.num_frames == 30 and np.isfinite(motion.values).all()


def test_training_seed_alone_decides_the_weights(tiny_dataset, text_encoder, tmp_path):
    """The initial weights follow the config's seed, not what ran before in the process (a resumed benchmark skips
    earlier stages; the quality check trains seeds one after another): same seed, same weights; another seed, not."""
    from express4d_hf.training.mdm import MDMTrainConfig, train_mdm

    def weights(seed: int, run: str) -> dict[str, torch.Tensor]:
        config = MDMTrainConfig.preset("tiny", seed=seed, max_steps=2, batch_size=8, sample_every=0, warmup_steps=1)
        pipe = train_mdm(tiny_dataset, tmp_path / run, config, text_encoder=text_encoder, progress=False, resume=False)
        return {k: v.clone() for k, v in pipe.denoiser.state_dict().items()}

    first = weights(0, "a")
    torch.rand(100)  # whatever else ran in between
    again, other = weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_fixed_length_tokens_give_the_same_text_embeddings(text_encoder):
    """The recorded text encoder pads every prompt to 64 tokens; the attention mask must make that invisible."""
    tokenizer, encoder = text_encoder
    prompts = ["A person blinks", "A person is squinting briefly and then opening their eyes wide"]
    fixed = tokenize_prompts(tokenizer, prompts, fixed_length=True)
    assert fixed["input_ids"].shape == (2, 64)
    with torch.no_grad():
        padded, _, _ = pool_token_states(encoder, **fixed)
    dynamic, _, _ = encode_prompts(tokenizer, encoder, prompts)
    torch.testing.assert_close(padded, dynamic, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_recorded_text_encoder_matches_the_eager_one(cuda_text_encoder):
    pipe = make_pipe(cuda_text_encoder).to("cuda")
    prompts = ["A person blinks", "A person is smiling widely and then frowning"]
    eager = pipe.encode_text(prompts)
    pipe.enable_fast_sampling(dtype=torch.float32)
    first, again = pipe.encode_text(prompts), pipe.encode_text(prompts[::-1])  # records, then replays new prompts
    torch.testing.assert_close(first, eager, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again, eager.flip(0), atol=1e-4, rtol=1e-4)
    assert len(pipe._graphs) == 1
    pipe.disable_fast_sampling()


def test_fast_path_keys_notice_casts_and_swapped_components(text_encoder):
    """Recordings are keyed by the weights' storage: a cast or a new component must give a new key."""
    pipe = make_pipe(text_encoder).to("cpu").enable_fast_sampling()  # (GPU tests move the shared text encoder)
    assert pipe._execution_device == torch.device("cpu") == pipe._fast_device
    key = pipe._weights_key("denoiser")
    assert pipe._weights_key("denoiser") == key  # cached parameter list, same answer
    torch.nn.Module.to(pipe.denoiser, torch.float64)
    cast = pipe._weights_key("denoiser")
    assert cast != key
    pipe.denoiser = MDMDenoiser.from_preset("tiny", **TINY)
    assert pipe._weights_key("denoiser") != cast  # (the freed float32 storage may be reused: only `cast` is alive)
    pipe.disable_fast_sampling()
    assert pipe._fast_device is None and pipe._execution_device == torch.device("cpu")


def test_model_card_usage_snippet_runs_as_written(text_encoder, tmp_path):
    """The card's Python example is what users copy first: run it against a saved tiny pipeline."""
    make_pipe(text_encoder).save_pretrained(tmp_path)
    scope = run_card_snippet(tmp_path)
    assert scope["motion"].num_frames == 80 and scope["motion"].metadata["guidance_rescale"] == 0.7
    assert read_livelink_csv(tmp_path / "smile.csv").fps == 60
