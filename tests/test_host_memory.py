"""keep_freed_memory: freed blocks are reused without new page faults (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocate and touch a 256 MB block twice; print the minor page faults of the second.
PROBE = """
import resource, sys
from jax_musicvae.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
block = bytearray(256 << 20); del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = bytearray(256 << 20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_memory_is_reused_without_page_faults():
    applied, kept_faults = probe("keep")
    _, plain_faults = probe("plain")
    assert applied
    # 256 MB is 65,536 pages of 4 KB: glibc maps a fresh block for the second bytearray.
    assert plain_faults > 30_000
    assert kept_faults < 1_000
