"""Deprecated alias of :mod:`express4d_hf.apps.space` (moved in 0.2; this alias goes in the next release)."""

import importlib
import sys
import warnings

warnings.warn("express4d_hf.space moved to express4d_hf.apps.space; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("express4d_hf.apps.space")
