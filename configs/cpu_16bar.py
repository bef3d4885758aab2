"""cpu_16bar: the thesis's 16-bar length with cpu_small's recipe, sized for a CPU.

16 bars of 16 steps (melody90), conductor over the bars, LSTM 1x128 encoder and
decoder, z 128, batch 32. Data: `musicvae data build corpus:folk-small
--representation melody90 --bars 16`. Each step reads four times the steps of a
cpu_small window, so expect about a quarter of its windows per second.
"""

from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.experiment import ExperimentConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="cpu_16bar",
        model=ModelConfig(
            cell="lstm",
            encoder_hidden=128,
            encoder_layers=1,
            decoder_hidden=128,
            decoder_layers=1,
            latent_size=128,
            num_bars=16,
            steps_per_bar=16,
            input_depth=90,
            wiring="magenta",
        ),
        loss=LossConfig(free_bits=256.0, max_beta=0.2, beta_rate=0.999),
        optim=OptimConfig(learning_rate=2e-3, min_learning_rate=1e-4, decay_rate=0.9999),
        sampling=SamplingConfig(schedule="teacher_forcing", token_dropout=0.5),
        train=TrainConfig(
            batch_size=32,
            num_steps=4000,
            eval_every=250,
            eval_batches=8,
            log_every=25,
            checkpoint_every=250,
            keep=2,
        ),
    )
