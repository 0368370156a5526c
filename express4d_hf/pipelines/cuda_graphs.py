"""Record a GPU computation once as a CUDA graph and replay it: the fast path of the pipelines.

At batch 1 a sampler is bound by kernel launches (a text encoder's few hundred, a 50-step denoising loop's
tens of thousands), not by arithmetic. A CUDA graph records those launches once, for one set of input
buffers, and replays them with a single launch. A recording is only valid for the shapes, settings and
weights it saw, so :class:`GraphCache` keys each recording by all three and keeps the most recent few.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class RecordedGraph:
    """One computation captured as a CUDA graph: copy new inputs into ``inputs``, replay, read ``output``."""

    graph: Any  # torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]  # static input buffers, read by every replay
    output: torch.Tensor | tuple[torch.Tensor, ...]  # overwritten by every replay (a tensor or a tuple of them)

    def replay(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        for name, value in inputs.items():
            self.inputs[name].copy_(value)
        self.graph.replay()
        if isinstance(self.output, tuple):
            return tuple(out.clone() for out in self.output)
        return self.output.clone()  # the next replay overwrites the static output


def record_cuda_graph(fn: Callable[..., Any], inputs: dict[str, torch.Tensor]) -> RecordedGraph:
    """Run ``fn(**inputs)`` once to warm up (library handles, kernel choice, compilation), then record it.

    ``fn`` must not synchronise with the host (no ``.item()``, no data-dependent shapes) and must read its
    inputs only from the tensors it is given: the recording reads copies of them.
    """
    static = {name: value.clone() for name, value in inputs.items()}
    device = next(iter(static.values())).device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the capture
        fn(**static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn(**static)
    if isinstance(output, tuple):  # a NamedTuple replays as a plain tuple
        output = tuple(output)
    return RecordedGraph(graph=graph, inputs=static, output=output)


class GraphCache:
    """The most recently used recordings, keyed by what makes a recording valid.

    A key must hold everything the recorded work depends on besides its input values: input shapes, the
    settings baked into the loop, and the weights' storage pointers (a cast or a reload re-records).
    Calls must not overlap: a recording has one set of input buffers.
    """

    def __init__(self, max_size: int):
        self.max_size = max_size
        self._graphs: OrderedDict[Hashable, RecordedGraph] = OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        self._graphs.clear()

    def run(self, key: Hashable, fn: Callable[..., Any], inputs: dict[str, torch.Tensor]) -> Any:
        """``fn(**inputs)`` through the recording for ``key``, recorded on its first use."""
        recorded = self._graphs.get(key)
        if recorded is None:
            recorded = self._graphs[key] = record_cuda_graph(fn, inputs)
            while len(self._graphs) > self.max_size:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return recorded.replay(inputs)


def weight_pointers(parameters) -> tuple[int, ...]:
    """Storage addresses of some parameters: part of a recording's key (the recorded kernels read them)."""
    return tuple(p.data_ptr() for p in parameters)


__all__ = ["GraphCache", "RecordedGraph", "record_cuda_graph", "weight_pointers"]
