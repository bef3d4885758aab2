"""cpu_16bar: the thesis's 16-bar length with cpu_small's model and recipe, for a CPU.

16 bars of 16 steps (melody90), conductor over the bars, LSTM 1x128 encoder and
decoder, z 128, batch 32. Data: `musicvae data build corpus:folk-small
--representation melody90 --bars 16`. Each window is four times cpu_small's, so
expect about a quarter of its windows per second.
"""

import dataclasses

from jax_musicvae.experiment import ExperimentConfig, load_config


def get_config() -> ExperimentConfig:
    config = load_config("cpu_small")
    return dataclasses.replace(
        config,
        name="cpu_16bar",
        model=dataclasses.replace(config.model, num_bars=16, latent_size=128),
        train=dataclasses.replace(
            config.train, batch_size=32, eval_every=250, checkpoint_every=250
        ),
    )
