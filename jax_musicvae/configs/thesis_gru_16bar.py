"""The thesis's DanceabilityGRUVAE: GRU, pianoroll61, danceability at the encoder.

Sizes and schedules of the original's configuration file: BiGRU 2x2048 encoder,
GRU 2x1024 conductor and core, z 512, dropout 0.1, lr 5e-4 decaying to 5e-7 at
0.9999 per step, clipping at norm 50, KL weight annealed to 0.2 at 0.9999, free
bits 256, Bernoulli reconstruction loss, teacher forcing fading with an inverse
sigmoid of k = 2000. The original's defects (see docs/architecture.md) are not
reproduced. Its final experiments used batch 2; 64 is used here. Data:
`musicvae data build SOURCE --representation pianoroll61 --bars 16`.
"""

from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.experiment import ExperimentConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="thesis_gru_16bar",
        model=ModelConfig(
            cell="gru",
            encoder_hidden=2048,
            encoder_layers=2,
            decoder_hidden=1024,
            decoder_layers=2,
            latent_size=512,
            num_bars=16,
            steps_per_bar=16,
            input_depth=61,
            dropout=0.1,
            conditioning="encoder",
            wiring="original",
        ),
        loss=LossConfig(recon_loss="bernoulli", free_bits=256.0, max_beta=0.2, beta_rate=0.9999),
        optim=OptimConfig(
            learning_rate=5e-4, min_learning_rate=5e-7, decay_rate=0.9999, clip_norm=50.0
        ),
        sampling=SamplingConfig(schedule="inverse_sigmoid", rate=2000.0),
        train=TrainConfig(
            batch_size=64,
            num_steps=100_000,
            eval_every=1000,
            log_every=100,
            checkpoint_every=1000,
        ),
    )
