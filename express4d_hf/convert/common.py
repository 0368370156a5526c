"""Shared helpers of the official-checkpoint converters: safe loading and strict key mapping."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be converted; the message names every problem (and the file)."""


def load_official_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors a user can act on.

    ``weights_only`` restricts unpickling to tensors and plain containers, so a tampered file cannot run code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise OfficialCheckpointError(
            f"{path}: refused by the safe loader (torch.load weights_only=True): {str(err).splitlines()[0]}. "
            "Official checkpoints hold only tensors and plain containers; this file holds something else"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise OfficialCheckpointError(f"{path}: not a readable torch checkpoint ({str(err).splitlines()[0]})") from None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class KeyMapping:
    """A strict official -> ours state-dict mapping: ``add`` each expected official tensor with its shape, then
    :meth:`apply` to a state dict, which raises one :class:`OfficialCheckpointError` naming every problem."""

    source: str
    rules: dict[str, tuple[str | None, tuple[int, ...], Callable[[torch.Tensor], torch.Tensor] | None]] = field(
        default_factory=dict
    )

    def add(self, official: str, ours: str | None, shape: tuple[int, ...],
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:  # fmt: skip
        """``ours=None``: expected and checked, but not copied (e.g. a derived table checked separately)."""
        self.rules[official] = (ours, tuple(shape), transform)

    def apply(self, state: Mapping[str, Any], ignore_prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        missing = [k for k in self.rules if k not in state]
        unexpected = [k for k in state if k not in self.rules and not k.startswith(ignore_prefixes)]
        misshaped, not_tensors = [], []
        for key, (_, shape, _) in self.rules.items():
            if key not in state:
                continue
            value = state[key]
            if not isinstance(value, torch.Tensor):
                not_tensors.append(f"{key} ({type(value).__name__})")
            elif tuple(value.shape) != shape:
                misshaped.append(f"{key}: {list(value.shape)}, expected {list(shape)}")
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: " + ", ".join(missing))
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected))
        if misshaped:
            problems.append(f"{len(misshaped)} mis-shaped: " + "; ".join(misshaped))
        if not_tensors:
            problems.append(f"{len(not_tensors)} not tensors: " + ", ".join(not_tensors))
        if problems:
            raise OfficialCheckpointError(
                f"{self.source}: the tensors do not match the official layout: " + " | ".join(problems)
            )
        out = {}
        for key, (ours, _, transform) in self.rules.items():
            if ours is None:
                continue
            value = state[key].detach().to(torch.float32)
            out[ours] = (transform(value) if transform is not None else value).contiguous().clone()
        return out
