"""express4d-hf: the Express4D text-to-facial-motion benchmark as Hugging Face citizens.

Data flows one way: CSV -> FaceMotion -> HF dataset -> batches -> model -> FaceMotion -> CSV / glTF / metrics.
"""

from .arkit import CHANNELS as ARKIT_CHANNELS
from .livelink import FaceMotion, LiveLinkFormatError, read_livelink_csv

__version__ = "0.1.0"
__all__ = ["ARKIT_CHANNELS", "FaceMotion", "LiveLinkFormatError", "read_livelink_csv", "__version__"]
