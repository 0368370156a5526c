"""Converters from the official Express4D checkpoints to this package's folders (floor 4: library code only).

- :func:`~express4d_hf.convert.mdm.convert_official_mdm`: the released MDM ``model*.pt`` (+ ``args.json``) ->
  an ``Express4DMDMPipeline`` folder;
- :func:`~express4d_hf.convert.evaluator.convert_official_evaluator`: the evaluator's ``finest.tar`` -> an
  evaluator folder the metrics load.

Official files are read only with ``torch.load(map_location="cpu", weights_only=True)``: no arbitrary
unpickling. Key mapping is strict: every missing, unexpected or mis-shaped tensor is named in one
:class:`OfficialCheckpointError`, and nothing is written.
"""

from .common import OfficialCheckpointError, load_official_torch_file

__all__ = ["OfficialCheckpointError", "load_official_torch_file"]
