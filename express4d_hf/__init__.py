"""express4d-hf: the Express4D text-to-facial-motion benchmark as Hugging Face citizens.

Data flows one way: CSV -> FaceMotion -> HF dataset -> batches -> model -> FaceMotion -> CSV / glTF / metrics.
"""

from .core.arkit import CHANNELS as ARKIT_CHANNELS
from .core.constants import __version__
from .core.motion import FaceMotion
from .livelink import LiveLinkFormatError, read_livelink_csv, write_livelink_csv

__all__ = ["ARKIT_CHANNELS", "FaceMotion", "LiveLinkFormatError", "read_livelink_csv", "write_livelink_csv", "__version__"]
