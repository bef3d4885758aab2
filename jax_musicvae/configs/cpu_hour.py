"""cpu_hour: cpu_small's model and recipe for people with an hour of 2 CPU cores.

The same data as cpu_small (`musicvae data build corpus:folk-small --representation
melody90 --bars 4`); 16,000 steps, evaluated every 1,000. Add
`--set train.max_seconds=3600` to stop at the hour wherever the step count stands.
"""

import dataclasses

from jax_musicvae.experiment import ExperimentConfig, load_config


def get_config() -> ExperimentConfig:
    config = load_config("cpu_small")
    return dataclasses.replace(
        config,
        name="cpu_hour",
        train=dataclasses.replace(
            config.train, num_steps=16_000, eval_every=1000, checkpoint_every=1000
        ),
    )
