"""Side-by-side throughput of the Flax model and the torch reference (issues 7, 14).

The timed steps run in one process and the frameworks are *alternated* step by
step, so drift in machine load hits all of them alike; figures are medians over
several repeats. The first step's time is reported as compile time; then each
framework runs `warmup` more untimed steps (JAX's first step after compiling is
1.4-2.4x slower than the rest on CPU, as memory is first touched). Both frameworks
get the same weights (converted once), the same batches and the same noise. The
achieved FLOP/s comes from the analytic count in `flop_count` and is divided by
the float32 matmul peak measured in the same run; CPU memory is measured in a
fresh process per framework (`measure_memory`; docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_musicvae import cpu_devices, rnn, schedules
from jax_musicvae.atomic import atomic_write
from jax_musicvae.config import (
    LossConfig,
    ModelConfig,
    OptimConfig,
    SamplingConfig,
    replace_checked,
)

logger = logging.getLogger(__name__)

FRAMEWORKS = ("jax", "torch", "torch-compile")
MODES = ("train", "sample")
BASELINE = "torch"
NOTES = {
    "torch-compile": "torch.compile(model); nn.LSTM/GRU stay eager (dynamo graph break)",
}

# Variants of a jax_musicvae/configs/ file: (base, model changes, sampling or None to
# keep the base's), for the GRU, conditioned and scheduled-sampling figures and the
# smoke test.
SCHEDULED = SamplingConfig(schedule="constant", rate=0.5)  # mid-schedule: half fed back
VARIANTS: dict[str, tuple[str, dict[str, Any], SamplingConfig | None]] = {
    "bench_small_gru": ("bench_small", {"cell": "gru"}, None),
    "bench_small_cond": ("bench_small", {"conditioning": "decoder"}, None),
    "mel_2bar_small": (
        "mel_2bar",
        {"encoder_hidden": 512, "decoder_hidden": 512, "latent_size": 256},
        SCHEDULED,
    ),
    "tiny": (
        "bench_small",
        {
            "encoder_hidden": 16,
            "decoder_hidden": 16,
            "latent_size": 8,
            "num_bars": 2,
            "steps_per_bar": 4,
            "input_depth": 13,
        },
        None,
    ),
    "tiny_scheduled": (
        "mel_2bar",
        {
            "encoder_hidden": 16,
            "decoder_hidden": 16,
            "latent_size": 8,
            "steps_per_bar": 8,
            "input_depth": 13,
        },
        SCHEDULED,
    ),
}


@dataclasses.dataclass
class Record:
    """One framework x config x mode x batch measurement (a row of bench.json)."""

    framework: str
    config: str
    mode: str
    batch: int
    examples_per_s: float
    median_step_s: float
    min_step_s: float
    max_step_s: float
    spread: float  # (max - min) / median of the timed steps
    step_times_s: list[float]
    # Minor page faults in each timed step: a step whose buffers found no free block
    # large enough touched new pages (bench_small B=64 on the CPU: 197,000 of them,
    # 1.2-2.8 s of kernel time; docs/benchmarks.md, session 20).
    step_page_faults: list[int]
    compile_s: float
    peak_mem_mb: float  # a warm step's working memory (CPU: measured in its own process)
    peak_rss_mb: float
    flops_per_step: float
    achieved_flops: float
    flops_fraction: float
    matmul_peak_flops: float
    device: str
    load_avg: tuple[float, float, float]
    machine: dict[str, Any] = dataclasses.field(default_factory=dict)
    torch_flush_denormal: bool | None = None  # torch CPU flush-to-zero (XLA always flushes)
    retained_mb: float | None = None  # CPU: what the first two steps left resident
    resident_mb: float | None = None  # CPU: all a warm step holds resident (see Memory)
    speedup_vs_torch: float | None = None  # median examples/s over torch eager's
    speedup_vs_torch_min: float | None = None  # the same from the fastest steps
    notes: str = ""


# -- configurations -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What a case needs from an experiment: the model, its loss and optimiser, and
    what the decoder is fed (teacher forcing, scheduled sampling, token dropout)."""

    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    sampling: SamplingConfig = SamplingConfig()


def bench_config(name: str) -> BenchConfig:
    """`jax_musicvae/configs/<name>.py` through the experiment loader, or a variant in VARIANTS."""
    from jax_musicvae.experiment import load_config

    base, changes, sampling = VARIANTS.get(name, (name, {}, None))
    experiment = load_config(base)
    model = replace_checked(experiment.model, **changes)
    return BenchConfig(model, experiment.loss, experiment.optim, sampling or experiment.sampling)


# -- analytic FLOP count ----------------------------------------------------------------


def rnn_flops(cell: str, rows: int, steps: int, inputs: int, hidden: int) -> int:
    """Matmul FLOPs of one RNN layer: 2 * rows * steps * (in + H) * G*H (G = 4 LSTM, 3 GRU)."""
    return 2 * rows * steps * (inputs + hidden) * rnn.gate_count(cell) * hidden


def dense_flops(rows: int, inputs: int, outputs: int) -> int:
    return 2 * rows * inputs * outputs


def forward_flops(c: ModelConfig, batch: int, encoder: bool = True) -> int:
    """Matmul FLOPs of one forward pass (teacher forcing / generation do the same matmuls).

    Elementwise gate math, one-hot construction and the loss are left out. The count is
    the model's: the one-hot input products are counted although the Flax model looks
    rows of W_ih up, and the core's context projection per step although it computes
    that once per bar (docs/benchmarks.md, "FLOP count and matmul peak").
    """
    b, u, s, d, h, layers = (
        batch,
        c.num_bars,
        c.steps_per_bar,
        c.input_depth,
        c.decoder_hidden,
        c.decoder_layers,
    )
    total = 0
    if encoder:
        for k in range(c.encoder_layers):
            inputs = d if k == 0 else 2 * c.encoder_hidden
            total += 2 * rnn_flops(c.cell, b, u * s, inputs, c.encoder_hidden)
        total += 2 * dense_flops(b, c.readout_size, c.head_size)
    if c.wiring == "original":
        total += dense_flops(b, c.z_size, c.head_size)
    state = layers * rnn.carry_size(c.cell) * h
    lz = c.decoder_code_size
    if c.wiring == "original":
        for k in range(layers):
            total += rnn_flops(c.cell, b, u, lz if k == 0 else h, h)
        total += dense_flops(b * u, h, c.latent_size)
        embedding = c.latent_size
    elif c.hierarchical:
        total += dense_flops(b, lz, state)
        for k in range(layers):
            total += rnn_flops(c.cell, b, u, 1 if k == 0 else h, h)
        total += dense_flops(b * u, h, state)
        embedding = h
    else:
        total += dense_flops(b, lz, state)
        embedding = lz
    for k in range(layers):
        total += rnn_flops(c.cell, b * u, s, d + embedding if k == 0 else h, h)
    total += dense_flops(b * u * s, h, d)
    return total


def flop_count(c: ModelConfig, batch: int, mode: str) -> int:
    """FLOPs of one step: train = 3 x forward (backward ~ 2 x forward); sample = decoder only."""
    if mode == "train":
        return 3 * forward_flops(c, batch)
    return forward_flops(c, batch, encoder=False)


# -- memory and the matmul peak ----------------------------------------------------------------


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def return_freed_blocks(threshold: int = 1 << 20) -> bool:
    """Make glibc return every freed block of `threshold` bytes or more to the kernel.

    By default glibc raises its mmap threshold (up to 32 MB) each time a large block
    is freed and keeps later blocks of that size in its heap, so freed buffers stay
    resident and a step's rise of the RSS under-reports its working memory. False
    where there is no glibc `mallopt`.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, threshold) and libc.mallopt(M_TRIM_THRESHOLD, threshold)
        )
    except (OSError, AttributeError):
        return False


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return 0.0 if kb is None else kb / 1024.0


def settled_rss_mb(timeout_s: float = 3.0) -> float:
    """The RSS once it stops falling: JAX frees a step's buffers on another thread
    after the step has returned, so the RSS right after a step still holds them."""
    deadline, last = time.perf_counter() + timeout_s, rss_mb()
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        now = rss_mb()
        if now > last - 1.0:
            return now
        last = now
    return last


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    return 0.0 if kb is None else kb / 1024.0


def minor_page_faults() -> int:
    """This process's minor page faults so far (0 where getrusage is missing)."""
    try:
        import resource
    except ImportError:  # not Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")
PEAK_SIZES = (1024, 2048, 3072)


def machine_info() -> dict[str, Any]:
    """CPU model, core count and the vector extensions present (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count() or 1,
        "vector_extensions": [flag for flag in VECTOR_FLAGS if flag in flags],
    }


def _fastest(run: Callable[..., Any], arguments: tuple[Any, ...], repeats: int) -> float:
    """The fastest of `repeats` timed calls of run(*arguments), after one untimed call."""
    run(*arguments)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*arguments)
        times.append(time.perf_counter() - start)
    return min(times)


def measure_matmul_peak(
    device: jax.Device, sizes: Sequence[int] = PEAK_SIZES, repeats: int = 5
) -> dict[str, float]:
    """Float32 FLOP/s of square matmuls in JAX and in torch on the same device.

    The best over `sizes` and `repeats` per framework (other load only ever slows a
    run down), and `best`, the larger of the two: the machine's practical peak.
    """
    import torch

    use_gpu = device.platform == "gpu"
    jax_matmul = jax.jit(jnp.matmul)

    def jax_run(a: jax.Array, b: jax.Array) -> None:
        jax_matmul(a, b).block_until_ready()

    def torch_run(a: Any, b: Any) -> None:
        torch.matmul(a, b)
        if use_gpu:
            torch.cuda.synchronize()

    peaks = {"jax": 0.0, "torch": 0.0}
    for size in sizes:
        keys = jax.random.split(jax.random.key(size))
        pair = tuple(jax.device_put(jax.random.normal(k, (size, size)), device) for k in keys)
        on = "cuda" if use_gpu else "cpu"
        torch_pair = tuple(torch.tensor(np.asarray(x), device=on) for x in pair)
        flops = 2.0 * size**3
        peaks["jax"] = max(peaks["jax"], flops / _fastest(jax_run, pair, repeats))
        peaks["torch"] = max(peaks["torch"], flops / _fastest(torch_run, torch_pair, repeats))
    return {**peaks, "best": max(peaks.values())}


def device_name(framework: str, use_gpu: bool) -> str:
    """Human-readable device of a framework, with torch's TF32 setting on CUDA."""
    if framework == "jax":
        device = jax.devices("gpu" if use_gpu else "cpu")[0]
        return f"jax:{device.platform}:{getattr(device, 'device_kind', '')}"
    import torch

    if use_gpu:
        tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        return f"torch:cuda:{torch.cuda.get_device_name()} (cuDNN, tf32={'on' if tf32 else 'off'})"
    return (
        f"torch:cpu:{platform.processor() or platform.machine()} threads={torch.get_num_threads()}"
    )


# -- runners ------------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
    """One batch and its noise, shared by every framework (numpy, float32 / int32)."""

    tokens: np.ndarray
    condition: np.ndarray | None
    eps: np.ndarray
    choose_noise: np.ndarray | None = None  # scheduled sampling: U[0, 1) [B, T]
    gumbel: np.ndarray | None = None  # scheduled sampling: Gumbel(0, 1) [B, T, D]
    token_keep: np.ndarray | None = None  # token dropout: 1 keep, 0 drop [B, T]
    attribute: np.ndarray | None = None  # Gaussianised danceability [B], where the loss uses it


def make_inputs(
    c: ModelConfig,
    batch: int,
    seed: int,
    sampling: SamplingConfig | None = None,
    loss: LossConfig | None = None,
) -> Inputs:
    sampling = sampling or SamplingConfig()
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, c.input_depth, (batch, c.sequence_length)).astype(np.int32)
    condition = rng.random(batch).astype(np.float32) if c.uses_condition else None
    eps = rng.standard_normal((batch, c.z_size)).astype(np.float32)
    inputs = Inputs(tokens, condition, eps)
    shape = (batch, c.sequence_length)
    if sampling.schedule != "teacher_forcing":
        inputs.choose_noise = rng.random(shape).astype(np.float32)
        inputs.gumbel = rng.gumbel(size=(*shape, c.input_depth)).astype(np.float32)
    if sampling.token_dropout > 0.0:
        inputs.token_keep = (rng.random(shape) >= sampling.token_dropout).astype(np.float32)
    if loss is not None and loss.uses_attribute:  # so the attribute terms are timed too
        inputs.attribute = rng.standard_normal(batch).astype(np.float32)
    return inputs


Runner = Callable[[], None]


def jax_runner(bc: BenchConfig, params: Any, inputs: Inputs, mode: str, use_gpu: bool) -> Runner:
    """A jitted train step (state donated, so XLA updates it in place) or generation."""
    from jax_musicvae import steps
    from jax_musicvae.models import MusicVAE

    c = bc.model
    device = jax.devices("gpu" if use_gpu else "cpu")[0]
    params = jax.tree.map(np.array, params)
    if mode == "sample":
        generate = jax.jit(
            lambda p, z, cond: MusicVAE(c).apply({"params": p}, z, cond, method=MusicVAE.generate)
        )
        devices = cpu_devices.split_devices(c, len(inputs.eps), "decode", device.platform)
        rows, replicated = cpu_devices.row_shardings(devices)
        params, z = jax.device_put(params, replicated), jax.device_put(inputs.eps, rows)
        condition = None if inputs.condition is None else jax.device_put(inputs.condition, rows)

        def sample() -> None:
            generate(params, z, condition)["tokens"].block_until_ready()

        return sample

    params = jax.device_put(params, device)
    condition = None if inputs.condition is None else jax.device_put(inputs.condition, device)
    batch = {"tokens": jax.device_put(inputs.tokens, device)}
    if condition is not None:
        batch["condition"] = condition
    if inputs.attribute is not None:
        batch["attribute"] = jax.device_put(inputs.attribute, device)
    noise = steps.Noise(
        *(
            None if a is None else jax.device_put(a, device)
            for a in (inputs.eps, inputs.choose_noise, inputs.gumbel, inputs.token_keep)
        )
    )
    loss, sampling = bc.loss, bc.sampling
    step = jax.jit(
        steps.train_step,
        static_argnames=("model", "loss", "sampling"),
        donate_argnums=(0,),
        compiler_options=steps.TRAIN_STEP_COMPILER_OPTIONS,
    )
    box = [steps.create_state(c, bc.optim, params)]
    beta = jnp.float32(loss.max_beta)
    probability = jnp.float32(schedules.sampling_probability(0, sampling))

    def train() -> None:
        state, metrics = step(
            box[0], batch, noise, beta, probability, None, model=c, loss=loss, sampling=sampling
        )
        metrics["loss"].block_until_ready()
        box[0] = state

    return train


def torch_runner(
    bc: BenchConfig,
    state_dict: dict[str, np.ndarray],
    inputs: Inputs,
    mode: str,
    use_gpu: bool,
    compiled: bool,
) -> Runner:
    """The reference's own train step / generate; `compiled` wraps the model in torch.compile."""
    import torch

    from torch_reference import train as torch_train
    from torch_reference.model import MusicVAE as TorchMusicVAE

    c = bc.model
    device = torch.device("cuda" if use_gpu else "cpu")
    model = TorchMusicVAE(c)
    model.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()})
    model.to(device)
    tokens = torch.tensor(inputs.tokens, dtype=torch.long, device=device)
    condition = None
    if inputs.condition is not None:
        condition = torch.tensor(inputs.condition, device=device)
    eps = torch.tensor(inputs.eps, device=device)
    noise = {
        name: None if value is None else torch.tensor(value, device=device)
        for name, value in (
            ("choose_noise", inputs.choose_noise),
            ("gumbel", inputs.gumbel),
            ("token_keep", inputs.token_keep),
        )
    }
    sync = torch.cuda.synchronize if use_gpu else (lambda: None)
    if mode == "sample":
        model.eval()

        def sample() -> None:
            model.generate(eps, condition)
            sync()

        return sample

    optimizer = torch_train.make_optimizer(model, bc.optim)
    module = torch.compile(model) if compiled else model
    batch = {"tokens": tokens, "condition": condition}
    if inputs.attribute is not None:
        batch["attribute"] = torch.tensor(inputs.attribute, device=device)
    counter = [0]

    def train() -> None:
        torch_train.train_step(
            module, optimizer, batch, counter[0], bc.loss, bc.optim, bc.sampling, eps, **noise
        )  # returns python floats: the step has finished on the device
        counter[0] += 1
        sync()

    return train


# -- the benchmark ------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    first_s: float = 0.0
    steps_s: list[float] = dataclasses.field(default_factory=list)
    peak_mem_mb: float = 0.0
    peak_rss_mb: float = 0.0
    retained_mb: float | None = None
    resident_mb: float | None = None
    step_page_faults: list[int] = dataclasses.field(default_factory=list)


def _timed(runner: Runner, timing: Timing, record: bool) -> None:
    """Run one step; add its time to `timing` (as the compile time if not `record`)."""
    reset_peak_rss()
    faults = minor_page_faults()
    start = time.perf_counter()
    runner()
    elapsed = time.perf_counter() - start
    if not record:
        timing.first_s = elapsed
        return
    timing.steps_s.append(elapsed)
    timing.step_page_faults.append(minor_page_faults() - faults)
    timing.peak_rss_mb = max(timing.peak_rss_mb, peak_rss_mb())


@dataclasses.dataclass
class Memory:
    """A framework's memory for one case, measured in a process of its own (MB)."""

    step_mb: float  # peak RSS of a warm step above the RSS before it
    retained_mb: float  # what the first two steps left resident (compiled code, optimiser
    # state, library caches such as torch's oneDNN GRU workspace)
    resident_mb: float  # peak RSS of a warm step above the RSS with both runtimes started
    # and no weights: weights, optimiser state, gradients, caches, compiled code and the step's
    # working memory, whichever side of the step boundary each framework keeps them on


def measure_memory(name: str, framework: str, mode: str, batch: int) -> Memory:
    """Memory of one framework's step, in a fresh process (`python -m jax_musicvae.bench`).

    In the benchmark's own process the frameworks' allocators reuse each other's
    freed heap, and glibc keeps freed blocks resident, so a rise of the RSS there
    says little. The child process returns freed blocks of 1 MB or more to the
    kernel from the start, builds the case, runs one step (JAX compiles; torch
    creates its optimiser state), then measures a second one.
    """
    argv = [sys.executable, "-m", "jax_musicvae.bench", name, framework, mode, str(batch)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory of {name} {framework} {mode} B={batch}: {done.stderr[-2000:]}")
    return Memory(**json.loads(done.stdout.strip().splitlines()[-1]))


def _memory_child(name: str, framework: str, mode: str, batch: int) -> Memory:
    import torch

    from jax_musicvae.conversion.parameters import flax_to_torch
    from jax_musicvae.models import init_params

    return_freed_blocks()
    torch.set_num_threads(min(os.cpu_count() or 1, torch.get_num_threads()))
    torch.set_flush_denormal(True)
    bc = bench_config(name)
    params = jax.tree.map(np.asarray, init_params(bc.model, jax.random.key(0)))
    inputs = make_inputs(bc.model, batch, 0, bc.sampling, bc.loss)
    # The baseline: both runtimes up and the weights initialised (by Flax, for either
    # framework), less the host weights, which are freed once the runner has its copy.
    torch.ones(8, 8) @ torch.ones(8, 8)
    weights_mb = sum(a.nbytes for a in jax.tree.leaves(params)) / 2**20
    baseline = settled_rss_mb() - weights_mb
    if framework == "jax":
        runner = jax_runner(bc, params, inputs, mode, use_gpu=False)
    else:
        state_dict = flax_to_torch(params, bc.model)
        runner = torch_runner(bc, state_dict, inputs, mode, False, framework == "torch-compile")
        del state_dict
    del params  # the runner holds its own copy; the baseline assumes the host one freed
    before_first = settled_rss_mb()
    runner()
    runner()  # the first warm step still grows glibc's arenas (JAX 4-45 MB, torch 1-6)
    before = settled_rss_mb()
    reset_peak_rss()
    runner()
    peak = peak_rss_mb()
    return Memory(
        step_mb=peak - before, retained_mb=before - before_first, resident_mb=peak - baseline
    )


def gpu_step_memory_mb(runner: Runner, framework: str) -> float:
    """The allocator's peak over one GPU step."""
    if framework == "jax":
        runner()
        stats = jax.devices("gpu")[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**20
    import torch

    torch.cuda.reset_peak_memory_stats()
    runner()
    return torch.cuda.max_memory_allocated() / 2**20


def _notes(framework: str, c: ModelConfig, batch: int, mode: str, use_gpu: bool) -> str:
    split = 1
    if framework == "jax" and mode == "sample":
        split = len(cpu_devices.split_devices(c, batch, "decode", "gpu" if use_gpu else "cpu"))
    if split > 1:
        return f"rows split over {split} CPU devices, one per core"
    return NOTES.get(framework, "")


def bench_case(
    name: str,
    bc: BenchConfig,
    weights: tuple[Any, dict[str, np.ndarray]],
    batch: int,
    mode: str,
    frameworks: Sequence[str],
    repeats: int,
    peak_flops: float,
    use_gpu: bool,
    seed: int = 0,
    warmup: int = 1,
) -> list[Record]:
    """All frameworks on one config x batch x mode, alternated step by step.

    `weights` is (Flax params, the same as a torch state dict), converted once.
    """
    c = bc.model
    params, state_dict = weights
    inputs = make_inputs(c, batch, seed, bc.sampling, bc.loss)
    runners: dict[str, Runner] = {}
    timings: dict[str, Timing] = {}
    for framework in frameworks:
        if framework == "torch-compile" and mode == "sample":
            logger.info(
                "skipping torch-compile for sample: dynamo would unroll its %d-step loop",
                c.sequence_length,
            )
            continue
        if framework == "jax":
            runners[framework] = jax_runner(bc, params, inputs, mode, use_gpu)
        else:
            runners[framework] = torch_runner(
                bc, state_dict, inputs, mode, use_gpu, compiled=framework == "torch-compile"
            )
        timings[framework] = Timing()
        logger.info("%s %s %s batch %d: first step (compile)", name, mode, framework, batch)
        _timed(runners[framework], timings[framework], record=False)
    for _ in range(warmup):
        for runner in runners.values():
            runner()
    for framework, runner in runners.items():
        if use_gpu:
            timings[framework].peak_mem_mb = gpu_step_memory_mb(runner, framework)
        else:
            memory = measure_memory(name, framework, mode, batch)
            timings[framework].peak_mem_mb = memory.step_mb
            timings[framework].retained_mb = memory.retained_mb
            timings[framework].resident_mb = memory.resident_mb
    for repeat in range(repeats):
        for framework, runner in runners.items():
            _timed(runner, timings[framework], record=True)
            logger.info(
                "%s %s %s batch %d repeat %d: %.3fs",
                name,
                mode,
                framework,
                batch,
                repeat,
                timings[framework].steps_s[-1],
            )
    flops = float(flop_count(c, batch, mode))
    records = []
    for framework, timing in timings.items():
        median = statistics.median(timing.steps_s)
        achieved = flops / median
        records.append(
            Record(
                framework=framework,
                config=name,
                mode=mode,
                batch=batch,
                examples_per_s=batch / median,
                median_step_s=median,
                min_step_s=min(timing.steps_s),
                max_step_s=max(timing.steps_s),
                spread=(max(timing.steps_s) - min(timing.steps_s)) / median,
                step_times_s=timing.steps_s,
                step_page_faults=timing.step_page_faults,
                compile_s=timing.first_s,
                peak_mem_mb=timing.peak_mem_mb,
                retained_mb=timing.retained_mb,
                resident_mb=timing.resident_mb,
                peak_rss_mb=timing.peak_rss_mb,
                flops_per_step=flops,
                achieved_flops=achieved,
                flops_fraction=achieved / peak_flops,
                matmul_peak_flops=peak_flops,
                device=device_name("jax" if framework == "jax" else "torch", use_gpu),
                load_avg=os.getloadavg(),
                notes=_notes(framework, c, batch, mode, use_gpu),
            )
        )
    baseline = next((r for r in records if r.framework == BASELINE), None)
    for record in records:
        if baseline is not None:
            record.speedup_vs_torch = record.examples_per_s / baseline.examples_per_s
            record.speedup_vs_torch_min = baseline.min_step_s / record.min_step_s
    return records


def run_benchmark(
    configs: Sequence[str],
    batches: Sequence[int],
    frameworks: Sequence[str] = FRAMEWORKS,
    modes: Sequence[str] = MODES,
    repeats: int = 3,
    gpu: bool | None = None,
    sample_batches: Sequence[int] | None = None,
    warmup: int = 1,
    flush_denormal: bool = True,
) -> list[Record]:
    """Every config x mode x batch; on CPU, and on GPU too when one is present (gpu=None).

    torch on the CPU runs with flush-to-zero (`flush_denormal`), the semantics XLA
    always has: without it, denormal arithmetic can slow torch's CPU steps by an
    order of magnitude on some CPUs; `flush_denormal=False` shows that penalty.
    """
    import torch

    from jax_musicvae.conversion.parameters import flax_to_torch
    from jax_musicvae.models import init_params

    torch.set_num_threads(min(os.cpu_count() or 1, torch.get_num_threads()))
    flushing = torch.set_flush_denormal(flush_denormal) and flush_denormal
    machine = machine_info()
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        raise ValueError(f"unknown frameworks {sorted(unknown)}; known: {', '.join(FRAMEWORKS)}")
    if gpu is None:
        gpu = torch.cuda.is_available() and any(d.platform == "gpu" for d in jax.devices())
    records: list[Record] = []
    for use_gpu in (False, True) if gpu else (False,):
        device = jax.devices("gpu" if use_gpu else "cpu")[0]
        peaks = measure_matmul_peak(device)
        peak = peaks["best"]
        logger.info(
            "%s matmul peak: jax %.1f, torch %.1f GFLOP/s",
            "GPU" if use_gpu else "CPU",
            peaks["jax"] / 1e9,
            peaks["torch"] / 1e9,
        )
        done: list[Record] = []
        for name in configs:
            bc = bench_config(name)
            params = jax.tree.map(np.asarray, init_params(bc.model, jax.random.key(0)))
            weights = (params, flax_to_torch(params, bc.model))
            for mode in modes:
                for batch in sample_batches if mode == "sample" and sample_batches else batches:
                    done += bench_case(
                        name,
                        bc,
                        weights,
                        batch,
                        mode,
                        frameworks,
                        repeats,
                        peak,
                        use_gpu,
                        warmup=warmup,
                    )
        # The peak again at the end; the larger one makes the fractions conservative.
        peak = max(peak, measure_matmul_peak(device)["best"])
        for record in done:
            record.matmul_peak_flops = peak
            record.flops_fraction = record.achieved_flops / peak
            record.machine = machine
            record.torch_flush_denormal = None if use_gpu else flushing
        records += done
    return records


# -- output ---------------------------------------------------------------------------------


def markdown_table(records: Sequence[Record]) -> str:
    """One row per record; `x torch` is median examples/s over torch eager's in the same
    case, `x torch (min)` the same ratio from each framework's fastest step; `most
    faults` the most minor page faults of a timed step (thousands); `peak MB`
    a warm step's working memory, `kept MB` what the first two steps left resident,
    `resident MB` all that a warm step holds resident (weights and optimiser included).
    Records' notes follow the table."""
    header = (
        "config",
        "mode",
        "batch",
        "framework",
        "examples/s",
        "x torch",
        "x torch (min)",
        "median step s",
        "spread",
        "most faults",
        "compile s",
        "peak MB",
        "kept MB",
        "resident MB",
        "GFLOP/s",
        "% matmul peak",
        "load",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        speedup = "" if r.speedup_vs_torch is None else f"{r.speedup_vs_torch:.2f}"
        speedup_min = "" if r.speedup_vs_torch_min is None else f"{r.speedup_vs_torch_min:.2f}"
        cells = (
            r.config,
            r.mode,
            str(r.batch),
            r.framework,
            f"{r.examples_per_s:.3g}",
            speedup,
            speedup_min,
            f"{r.median_step_s:.3g}",
            f"{100 * r.spread:.0f}%",
            f"{max(r.step_page_faults, default=0) / 1000:.0f}k",
            f"{r.compile_s:.1f}",
            f"{r.peak_mem_mb:.0f}",
            "" if r.retained_mb is None else f"{r.retained_mb:.0f}",
            "" if r.resident_mb is None else f"{r.resident_mb:.0f}",
            f"{r.achieved_flops / 1e9:.1f}",
            f"{100 * r.flops_fraction:.0f}%",
            f"{r.load_avg[0]:.1f}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"- {r.config} {r.mode} B={r.batch} {r.framework}: {r.notes}" for r in records if r.notes
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def _case(r: Record) -> tuple[str, str, int, str]:
    return (r.config, r.mode, r.batch, r.device.split(":")[1])


def bar_chart(records: Sequence[Record], path: Path) -> None:
    """Grouped bars of examples/s (log scale) per case, one colour per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(_case(r) for r in records))
    frameworks = list(dict.fromkeys(r.framework for r in records))
    width = 0.8 / max(len(frameworks), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cases)), 4.0))
    for i, framework in enumerate(frameworks):
        xs, ys = [], []
        for j, case in enumerate(cases):
            for r in records:
                if r.framework == framework and _case(r) == case:
                    xs.append(j + (i - (len(frameworks) - 1) / 2) * width)
                    ys.append(r.examples_per_s)
        ax.bar(xs, ys, width, label=framework)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"{c}\n{m} B={b}" for c, m, b, _ in cases], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("examples (train) / sequences (sample) per s")
    ax.legend()
    ax.set_title(f"musicvae bench, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(records: Sequence[Record], out: Path) -> str:
    """bench.json, bench.md and bench.png in `out`; returns the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(records)
    atomic_write(
        out / "bench.json",
        json.dumps([dataclasses.asdict(r) for r in records], indent=1, allow_nan=False),
    )
    atomic_write(out / "bench.md", table + "\n")
    bar_chart(records, out / "bench.png")
    return table


if __name__ == "__main__":  # the child process of `measure_memory`
    cpu_devices.use_one_device_per_core()  # as `musicvae bench`
    config, framework_name, mode_name, batch_size = sys.argv[1:5]
    print(
        json.dumps(
            dataclasses.asdict(_memory_child(config, framework_name, mode_name, int(batch_size)))
        )
    )
