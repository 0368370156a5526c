"""Worker processes that die with their parent (the dataset build's and the corpus synthesis' pools)."""

from __future__ import annotations

import os


def die_with_parent(parent_pid: int) -> None:
    """Pool worker initializer: the worker exits when the build process dies (even by ``kill -9``), instead of
    staying blocked on its pipe. Linux: ``PR_SET_PDEATHSIG``; elsewhere a thread that watches the parent pid."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        import time

        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="express4d-parent-watch", daemon=True).start()
