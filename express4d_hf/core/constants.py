"""Protocol constants of the Express4D benchmark (DESIGN.md, "Training representation")."""

from pathlib import Path

__version__ = "0.2.0"  # the package version (pyproject.toml reads it from here)

CAPTURE_FPS = 60  # Live Link Face takes of Express4D are recorded at 60 fps
TRAIN_FPS = 20  # models see motion at 20 fps (the paper keeps every third frame; we low-pass first)
MAX_FRAMES = 196  # at most 196 training frames (9.8 s at 20 fps); longer clips are cropped
MIN_FRAMES = 20  # clips shorter than 20 training frames (1 s) are dropped
MAX_LEADING_OFFSET = 10  # training samples lose a random 0..10 leading frames
DIFFUSION_SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++")  # MDM samplers by short name (make_scheduler)
# MDM's guidance rescale for the paper-size model: 50-step DDIM then beats the official plain-guidance
# 1000-step sampler's FID, at higher R-Precision (docs/BENCHMARKS.md, "Quality at speed")
RECOMMENDED_GUIDANCE_RESCALE = 0.7
EVAL_GROUP_SIZE = 32  # R-Precision ranks motions within consecutive groups of 32 pairs

# Dataset and model card templates (``$field`` placeholders), shipped inside the package.
HUB_CARDS_DIR = Path(__file__).resolve().parent.parent / "hub_cards"
