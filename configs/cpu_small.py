"""cpu_small: the README default, a hierarchical melody model for 2 CPU cores.

4 bars of 16 steps (melody90) with a conductor over the bars, LSTM 1x128 encoder
(bidirectional) and decoder, z 64. Data: `musicvae data build corpus:folk-small
--representation melody90 --bars 4` (what `musicvae quickstart` builds).
"""

from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.experiment import ExperimentConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="cpu_small",
        model=ModelConfig(
            cell="lstm",
            encoder_hidden=128,
            encoder_layers=1,
            decoder_hidden=128,
            decoder_layers=1,
            latent_size=64,
            num_bars=4,
            steps_per_bar=16,
            input_depth=90,
            wiring="magenta",
        ),
        loss=LossConfig(free_bits=64.0, max_beta=0.2, beta_rate=0.999),
        optim=OptimConfig(learning_rate=2e-3, min_learning_rate=1e-4, decay_rate=0.999),
        sampling=SamplingConfig(schedule="teacher_forcing"),
        train=TrainConfig(
            batch_size=64,
            num_steps=2000,
            eval_every=250,
            eval_batches=8,
            log_every=25,
            checkpoint_every=250,
            keep=2,
        ),
    )
