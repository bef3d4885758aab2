"""Keep freed host memory for reuse instead of handing it back to the kernel.

XLA on the CPU allocates each training step's temporaries (hundreds of MB to GB)
afresh and frees them at the end of the step. glibc serves blocks that large with
mmap, or from per-thread arenas it shrinks again, so every step touches brand-new
pages: bench_small_gru at batch 256 took 915,000 minor page faults and 1.6 s of
kernel time per 7 s step (docs/benchmarks.md, session 13). One arena that never
maps, never trims and so keeps what it has freed serves the next step from pages
already in place. Glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = -1  # as M_TRIM_THRESHOLD: never give the top of the heap back (mallopt(3))


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in one arena; True if it took effect.

    Call it before the first JAX computation: arenas that worker threads have
    already created keep their own policy.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    gnu_get_libc_version.restype = ctypes.c_char_p
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER))
    applied = all(mallopt(option, value) == 1 for option, value in settings)
    logger.debug(
        "glibc %s: freed memory kept in one arena: %s",
        gnu_get_libc_version().decode(),
        applied,
    )
    return applied
