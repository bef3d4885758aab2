"""cat-mel_2bar_big: the MusicVAE paper's flat 2-bar melody model.

BiLSTM 2048 encoder, flat 3x2048 LSTM decoder over 32 steps (one "bar" of 32 steps,
so the magenta wiring has no conductor), z 512, batch 512, beta annealed to 0.5 at
rate 0.99999, inverse-sigmoid scheduled sampling with k = 1000. Data:
`musicvae data build SOURCE --representation melody90 --bars 2 --transpose -5:5`.
"""

from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.experiment import ExperimentConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="mel_2bar",
        model=ModelConfig(
            cell="lstm",
            encoder_hidden=2048,
            encoder_layers=1,
            decoder_hidden=2048,
            decoder_layers=3,
            latent_size=512,
            num_bars=1,
            steps_per_bar=32,
            input_depth=90,
            wiring="magenta",
        ),
        loss=LossConfig(free_bits=0.0, max_beta=0.5, beta_rate=0.99999),
        optim=OptimConfig(learning_rate=1e-3, min_learning_rate=1e-5, decay_rate=0.9999),
        sampling=SamplingConfig(schedule="inverse_sigmoid", rate=1000.0),
        train=TrainConfig(
            batch_size=512,
            num_steps=200_000,
            eval_every=1000,
            log_every=100,
            checkpoint_every=1000,
        ),
    )
