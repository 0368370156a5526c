"""Measure the official-checkpoint conversion (docs/BENCHMARKS.md, "The official checkpoints").

1. A paper-size official-layout MDM (8 layers, latent 512, CLIP width 512; random weights) converted: tensor and
   parameter counts, and the largest difference from the reference network (float32, padded clips, condition
   dropped and kept).
2. The scheduler: diffusers' float32 betas / alphas_cumprod / posterior coefficients against the official float64
   ones (which the official sampler casts to float32 per step).
3. The effect on samples: the full 1000-step ancestral sampler with guidance, run with diffusers' DDPMScheduler and
   with the official float64 coefficients (same model, same noise), largest difference of the final samples.

Run from the repository root: ``python bench/measure_official_conversion.py`` (CPU, about a minute).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from official_reference import ReferenceMDM  # noqa: E402

from express4d_hf.convert.mdm import official_betas, official_mdm_to_denoiser, official_scheduler  # noqa: E402


def conversion_error(latent: int, layers: int, clip_dim: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    ref = ReferenceMDM(latent_dim=latent, num_layers=layers, clip_dim=clip_dim).eval()
    state = ref.state_dict()
    denoiser = official_mdm_to_denoiser(state, {"latent_dim": latent, "layers": layers}, clip_dim=clip_dim)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 196, 61, generator=g)
    lengths = torch.tensor([196, 150, 61, 20])
    mask = torch.arange(196)[None] < lengths[:, None]
    text = torch.randn(4, clip_dim, generator=g)
    drop = torch.tensor([False, True, False, True])
    t = torch.tensor([0, 17, 500, 999])
    with torch.no_grad():
        ours = denoiser(x, t, text, frame_mask=mask, cond_drop_mask=drop)
        theirs = ref(x.permute(0, 2, 1)[:, :, None], t, text, drop, mask[:, None, None]).squeeze(2).permute(0, 2, 1)
    learned = [k for k in state if not k.endswith(".pe")]
    return {
        "official_tensors": len(state), "learned_tensors": len(learned),
        "parameters_millions": round(sum(state[k].numel() for k in learned) / 1e6, 3),
        "max_abs_error": float((ours - theirs)[mask].abs().max()), "output_scale": float(theirs[mask].abs().max()),
    }  # fmt: skip


def scheduler_errors() -> dict:
    sched = official_scheduler({"diffusion_steps": 1000, "noise_schedule": "cosine", "sigma_small": True})
    betas = official_betas("cosine", 1000)
    acp = np.cumprod(1 - betas)
    ours = sched.alphas_cumprod.double().numpy()
    return {
        "betas_max_abs": float(np.abs(sched.betas.double().numpy() - betas).max()),
        "alphas_cumprod_max_abs": float(np.abs(ours - acp).max()),
        "alphas_cumprod_max_rel": float((np.abs(ours - acp) / acp).max()),
        "alphas_cumprod_rel_at_t999": float(abs(ours[999] - acp[999]) / acp[999]),
        "alphas_cumprod_t999": float(acp[999]),
    }


def sample(denoiser, text, steps_fn, seed: int, frames: int = 60, guidance: float = 2.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, frames, 61, generator=g)
    mask = torch.ones(2, frames, dtype=torch.bool)
    drop = torch.tensor([False, True])
    for t in range(999, -1, -1):
        with torch.no_grad():
            x0 = denoiser(torch.cat([x, x]), torch.tensor([t, t]), torch.cat([text, text]), frame_mask=mask,
                          cond_drop_mask=drop)  # fmt: skip
        cond, uncond = x0.chunk(2)
        x = steps_fn(uncond + guidance * (cond - uncond), t, x, g)
    return x


def sampling_effect(latent: int = 64, layers: int = 2, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    ref = ReferenceMDM(latent_dim=latent, num_layers=layers, clip_dim=512).eval()
    denoiser = official_mdm_to_denoiser(ref.state_dict(), {"latent_dim": latent, "layers": layers}, clip_dim=512)
    text = torch.randn(1, 512, generator=torch.Generator().manual_seed(1))
    sched = official_scheduler({"diffusion_steps": 1000, "noise_schedule": "cosine", "sigma_small": True})
    sched.set_timesteps(1000)

    def diffusers_step(x0, t, x, g):
        return sched.step(x0, t, x, generator=g).prev_sample

    betas = official_betas("cosine", 1000)
    acp = np.cumprod(1 - betas)
    acp_prev = np.append(1.0, acp[:-1])
    coef1 = betas * np.sqrt(acp_prev) / (1 - acp)
    coef2 = (1 - acp_prev) * np.sqrt(1 - betas) / (1 - acp)
    var = betas * (1 - acp_prev) / (1 - acp)
    log_var = np.log(np.append(var[1], var[1:]))

    def official_step(x0, t, x, g):  # the official p_sample: float64 tables, cast to float32 per step
        mean = float(np.float32(coef1[t])) * x0 + float(np.float32(coef2[t])) * x
        noise = torch.randn(x.shape, generator=g)
        return mean + (float(np.float32(np.exp(0.5 * log_var[t]))) * noise if t > 0 else 0.0)

    a = sample(denoiser, text, diffusers_step, seed)
    b = sample(denoiser, text, official_step, seed)
    return {"max_abs_difference": float((a - b).abs().max()), "sample_scale": float(b.abs().max()),
            "model": f"random official-layout MDM, latent {latent}, {layers} layers; 60 frames, guidance 2.5"}  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    report = {
        "paper_size_conversion": conversion_error(512, 8, 512),
        "scheduler": scheduler_errors(),
        "ddpm_1000_steps_float32_vs_official": sampling_effect(),
    }
    print(json.dumps(report, indent=2))
