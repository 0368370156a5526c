"""Deprecated alias of :mod:`express4d_hf.core.stats` (moved in 0.2; this alias goes in the next release)."""

import importlib
import sys
import warnings

warnings.warn("express4d_hf.data.stats moved to express4d_hf.core.stats; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("express4d_hf.core.stats")
