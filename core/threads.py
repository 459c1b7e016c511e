"""CPU threads for torch on a shared machine: honour CSFORGE_TORCH_THREADS, else use the free cores.

    from core import threads
    threads.configure()        # before the first heavy torch work of a process

On a small box shared with other jobs, torch's default (one thread per core, OpenMP
threads spinning while they wait) makes every job fight for the same cores: a LoRA job
ran 7x slower with 2 threads than with 1 under a load of 7-13. So:
  - CSFORGE_TORCH_THREADS=N wins when set;
  - otherwise the cores not busy right now: cores minus the 1-minute load average
    (at least 1), measured once per process before our own threads add to it;
  - OMP_WAIT_POLICY=PASSIVE: idle OpenMP workers sleep instead of spinning, so a thread
    pool waiting on a lock or between ops leaves the cores to whoever has work. OpenMP
    reads it when torch loads, so `core/__init__` calls `prepare_env()` first thing;
  - glibc's mmap threshold held at its 128 KiB default (see `hold_mmap_threshold`).
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading

THREADS_VAR = "CSFORGE_TORCH_THREADS"

_CHOSEN: int | None = None
_LOCK = threading.Lock()


def prepare_env() -> None:
    """Environment torch's OpenMP runtime reads at load time (setdefault: a user's choice wins)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' own pool fights torch's
    hold_mmap_threshold()


MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


def hold_mmap_threshold() -> bool:
    """Keep glibc from raising its mmap threshold; True when set here.

    glibc raises the threshold (up to 32 MiB) each time a large mmapped block is freed.
    After a few torch ops, activation-sized tensors then come from the heap, where freed
    blocks fragment and are not returned: one LoRA step at 4 x 1024 tokens peaked at
    5.8 GB resident instead of 1.8 GB. Setting the threshold explicitly turns the dynamic
    rise off. A user's MALLOC_MMAP_THRESHOLD_ wins; other C libraries are left alone.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False


def cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose(n_cores: int | None = None, load: float | None = None) -> int:
    """Threads to use: CSFORGE_TORCH_THREADS, else the cores the load average leaves free (>= 1)."""
    wanted = os.environ.get(THREADS_VAR, "").strip()
    if wanted:
        try:
            value = int(wanted)
        except ValueError:
            raise ValueError(f"{THREADS_VAR}={wanted!r}: expected a whole number of threads") from None
        if value < 1:
            raise ValueError(f"{THREADS_VAR}={value}: expected at least 1 thread")
        return value
    n_cores = n_cores or cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this platform: assume an idle box
            load = 0.0
    return max(1, min(n_cores, int(n_cores - load + 0.5)))


def configure(force: bool = False) -> int:
    """Set torch's intra-op threads once per process (again with force=True); returns the number."""
    global _CHOSEN
    with _LOCK:
        if _CHOSEN is not None and not force:
            return _CHOSEN
        import torch  # prepare_env() already ran: `import core` runs it before this module loads

        _CHOSEN = choose()
        torch.set_num_threads(_CHOSEN)
        return _CHOSEN


def chosen() -> int | None:
    """The number configure() set in this process, or None before it ran."""
    return _CHOSEN
