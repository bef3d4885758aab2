"""Decoding and encoding on the CPU with one JAX device per core, each taking a share of rows.

XLA:CPU runs a program on one device and splits each kernel over the cores. A
generation step's kernels are small (bench_small at batch 64: [64, 256] x [256, 1024]
products of 0.2 ms), and handing half of each to a second thread costs much of what
the thread saves. With one device per core, each core runs the whole loop for its own
rows with no hand-offs. Decoding is split while a step's weights fit a core's caches;
encoding while the encoder has one layer (a second layer's input projection is a large
matmul, and work with large kernels, training included, runs slower split). Figures in
docs/benchmarks.md, session 21.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jax_musicvae import rnn
from jax_musicvae.config import ModelConfig

logger = logging.getLogger(__name__)

# Decoding is split while a step's weights stay within the first bound (measured on a
# 2-core AMD EPYC: 7 MB 6-25% faster split, 13 MB level, 21 MB 14-20% slower); encoding
# only for an encoder of one layer whose two directions' W_hh stay within the second
# (0.5 MB 1.5-1.8x faster, 2 MB 1.3-1.5x, 8 MB level; two layers level or 1.45x slower).
MAX_STEP_WEIGHT_BYTES = 8 << 20
MAX_ENCODER_STEP_WEIGHT_BYTES = 4 << 20
# Nor below this many rows per device (not measured below 32: a guard for many-core hosts).
MIN_ROWS_PER_DEVICE = 16
ROWS_AXIS = "rows"


def use_one_device_per_core() -> bool:
    """Ask JAX for one CPU device per core this process may run on; True if it did.

    Call it before JAX's first computation. A count already chosen (XLA_FLAGS'
    --xla_force_host_platform_device_count, jax_num_cpu_devices) is left alone.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or jax.config.jax_num_cpu_devices > 0:
        return False
    try:
        jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
    except RuntimeError:  # JAX has already started: keep its devices
        logger.debug("JAX already started; its CPU devices stay as they are")
        return False
    return True


def decoding_step_weight_bytes(config: ModelConfig) -> int:
    """Bytes of the weights one decoding step multiplies by: every layer's W_hh, the
    upper layers' W_ih and the output layer (the first layer's input is a row lookup)."""
    hidden, layers = config.decoder_hidden, config.decoder_layers
    gates = rnn.gate_count(config.cell) * hidden
    return 4 * ((2 * layers - 1) * hidden * gates + hidden * config.input_depth)


def encoding_step_weight_bytes(config: ModelConfig) -> int:
    """Bytes of one encoder layer's W_hh, both directions (what each step multiplies by)."""
    hidden = config.encoder_hidden
    return 4 * 2 * hidden * rnn.gate_count(config.cell) * hidden


def _most_devices(rows: int, devices: int) -> int:
    """The most devices, at least MIN_ROWS_PER_DEVICE rows each, that divide the rows."""
    most = min(devices, rows // MIN_ROWS_PER_DEVICE)
    return max((k for k in range(1, most + 1) if rows % k == 0), default=1)


def decoding_split(config: ModelConfig, rows: int, devices: int) -> int:
    """Over how many CPU devices to split `rows` rows of decoding (1: do not split)."""
    if decoding_step_weight_bytes(config) > MAX_STEP_WEIGHT_BYTES:
        return 1
    return _most_devices(rows, devices)


def encoding_split(config: ModelConfig, rows: int, devices: int) -> int:
    """Over how many CPU devices to split `rows` rows of encoding (1: do not split)."""
    if config.encoder_layers > 1:
        return 1
    if encoding_step_weight_bytes(config) > MAX_ENCODER_STEP_WEIGHT_BYTES:
        return 1
    return _most_devices(rows, devices)


SPLITS = {"decode": decoding_split, "encode": encoding_split}


def split_devices(
    config: ModelConfig, rows: int, work: str, backend: str | None = None
) -> list[jax.Device]:
    """The devices of `backend` (default: JAX's) to run `rows` rows of `work` ("decode",
    "encode") on: one, unless it is the CPU and JAX has several CPU devices
    (`use_one_device_per_core`) that the rule for that work splits over."""
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return jax.devices(backend)[:1]
    devices = jax.local_devices(backend="cpu")
    return devices[: SPLITS[work](config, rows, len(devices))]


def row_shardings(devices: list[jax.Device]) -> tuple[NamedSharding, NamedSharding]:
    """(rows split over `devices`, replicated over them)."""
    mesh = Mesh(np.array(devices), (ROWS_AXIS,))
    return NamedSharding(mesh, PartitionSpec(ROWS_AXIS)), NamedSharding(mesh, PartitionSpec())
