"""Several training processes on one GPU: a private CUDA MPS daemon, so their kernels can run at the same time.

Without MPS, processes on one GPU take turns (time slicing): MDM, the VQ-VAE and the GPT, each ~90% busy alone,
ran at once 1.06x faster than one after the other on an H200; under MPS 1.31x (``bench/bench_training.py
--together compiled [--mps]``, docs/BENCHMARKS.md "Stages at once"). The daemon here is private (its pipe and
log folders in a temporary folder), so it neither needs nor touches a system-wide MPS set-up, and a client joins
it through the environment in :attr:`MPSDaemon.env`, set before the client initialises CUDA.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

MPS_CONTROL = "nvidia-cuda-mps-control"


def mps_unavailable_reason() -> str | None:
    """Why a private MPS daemon cannot be started here (None: it can be tried)."""
    if shutil.which(MPS_CONTROL) is None:
        return f"{MPS_CONTROL} is not on the PATH (it comes with the NVIDIA driver's utilities)"
    return None


class MPSDaemon:
    """A private CUDA MPS control daemon for the ``with`` block, its pipe and log folders under ``folder``.

    Clients need :attr:`env` in their environment before CUDA starts; the daemon quits when the block ends (its
    server exits with the last client). Raises ``RuntimeError`` naming the cause when it cannot start."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": str(self.folder / "mps_pipe"), "CUDA_MPS_LOG_DIRECTORY": str(self.folder / "mps_log")}

    def __enter__(self) -> MPSDaemon:
        reason = mps_unavailable_reason()
        if reason:
            raise RuntimeError(f"CUDA MPS: {reason}")
        for path in self.env.values():
            Path(path).mkdir(parents=True, exist_ok=True)
        done = subprocess.run([MPS_CONTROL, "-d"], env={**os.environ, **self.env}, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"CUDA MPS: `{MPS_CONTROL} -d` failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:300]}")
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run([MPS_CONTROL], input="quit\n", text=True, env={**os.environ, **self.env}, capture_output=True, check=False)


@contextlib.contextmanager
def mps_client_env(enabled: bool = True) -> Iterator[tuple[dict[str, str], str | None]]:
    """For the ``with`` block, ``(env, error)``: the environment that makes a process a client of a private MPS
    daemon running for the block, or ``({}, why not)`` when it cannot start (``({}, None)`` when not
    ``enabled``): the processes then share the GPU by taking turns."""
    if not enabled:
        yield {}, None
        return
    with tempfile.TemporaryDirectory(prefix="express4d_mps_") as tmp, contextlib.ExitStack() as stack:
        try:
            env, error = stack.enter_context(MPSDaemon(Path(tmp))).env, None
        except RuntimeError as err:
            env, error = {}, str(err)
        yield env, error


def worker_env(shared: dict[str, str], index: int, gpus: int) -> dict[str, str]:
    """The environment of the ``index``-th of several training processes: ``shared`` (e.g. the MPS client
    environment) and, over ``gpus > 1`` GPUs, the GPU it is pinned to (round-robin)."""
    return {**shared, **({"CUDA_VISIBLE_DEVICES": str(index % gpus)} if gpus > 1 else {})}
