"""The throughput benchmark's model (issue 7): LSTM, 2x256 encoder and decoder, z 128.

16 bars of 16 steps, melody90, no conditioning, teacher forcing, batch 64.
"""

from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.experiment import ExperimentConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="bench_small",
        model=ModelConfig(
            cell="lstm",
            encoder_hidden=256,
            encoder_layers=2,
            decoder_hidden=256,
            decoder_layers=2,
            latent_size=128,
            num_bars=16,
            steps_per_bar=16,
            input_depth=90,
            conditioning="none",
            wiring="magenta",
        ),
        loss=LossConfig(free_bits=256.0, max_beta=0.2, beta_rate=0.0),
        optim=OptimConfig(learning_rate=1e-3),
        sampling=SamplingConfig(schedule="teacher_forcing"),
        train=TrainConfig(batch_size=64, num_steps=1000, eval_every=200, checkpoint_every=200),
    )
