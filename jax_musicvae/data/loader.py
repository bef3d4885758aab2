"""A grain loader of training batches over a built dataset (`data.source`).

Batches come from grain's `DataLoader` with an
`IndexSampler`: it shards the records by process (`process_index`,
`process_count`, passed in as ints so this module never imports jax), shuffles
per epoch from `seed`, and its iterator's position is exact and portable:

    it = iter(loader)
    ...
    state = it.get_state()        # bytes (JSON), store next to a checkpoint
    it = iter(loader); it.set_state(state)   # resumes with the very next batch

Batches are `{"tokens": int32 [B, T], "condition": float32 [B]}`; condition is
the song's danceability (NaN for a dataset built without one) or, with
`danceability="window"`, the rhythm estimate of the window itself.
"""

from __future__ import annotations

from pathlib import Path

import grain.python as grain

from jax_musicvae.data.source import WindowSource

# Records are read where the batch is asked for, without prefetch threads: a window is
# a slice of a memory-mapped array (a batch of 64 in 3.3 ms), while grain's default
# prefetch (16 threads, 500 records buffered) cost 30 ms of CPU per batch, most of it
# grain measuring its buffer's depth at every record, taken from the training step's
# cores (docs/benchmarks.md, "End to end", session 18).
READ_IN_CALLING_THREAD = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def make_loader(
    root: str | Path,
    split: str = "train",
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    drop_remainder: bool = True,
    worker_count: int = 0,
    danceability: str = "song",
) -> grain.DataLoader:
    """A grain DataLoader of batches of one split (endless when num_epochs is None).

    Each process reads its own 1/process_count of the records; with
    drop_remainder every process sees the same number of batches.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    source = WindowSource(root, split, danceability)
    if len(source) < process_count * batch_size and drop_remainder:
        raise ValueError(
            f"{root}/{split}: {len(source)} windows cannot fill a batch of {batch_size} "
            f"on each of {process_count} processes"
        )
    sampler = grain.IndexSampler(
        num_records=len(source),
        shard_options=grain.ShardOptions(process_index, process_count, drop_remainder=True),
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[grain.Batch(batch_size, drop_remainder=drop_remainder)],
        worker_count=worker_count,
        read_options=READ_IN_CALLING_THREAD,
    )
