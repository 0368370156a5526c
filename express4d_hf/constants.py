"""Deprecated alias of :mod:`express4d_hf.core.constants` (moved in 0.2; this alias goes in the next release)."""

import importlib
import sys
import warnings

warnings.warn("express4d_hf.constants moved to express4d_hf.core.constants; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("express4d_hf.core.constants")
