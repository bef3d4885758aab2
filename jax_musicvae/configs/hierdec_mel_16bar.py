"""hierdec-mel_16bar: the MusicVAE paper's hierarchical 16-bar melody model.

BiLSTM 2x2048 encoder, conductor and core LSTMs 2x1024, z 512, batch 512, free
bits 256, beta 0.2 from the start, teacher forcing, 200k steps. Data:
`musicvae data build SOURCE --representation melody90 --bars 16`. On a pod slice,
`--set mesh.model=4 --set mesh.shard_params=true` shards the weights as well.
"""

from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from jax_musicvae.experiment import ExperimentConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="hierdec_mel_16bar",
        model=ModelConfig(
            cell="lstm",
            encoder_hidden=2048,
            encoder_layers=2,
            decoder_hidden=1024,
            decoder_layers=2,
            latent_size=512,
            num_bars=16,
            steps_per_bar=16,
            input_depth=90,
            wiring="magenta",
        ),
        loss=LossConfig(free_bits=256.0, max_beta=0.2, beta_rate=0.0),
        optim=OptimConfig(learning_rate=1e-3, min_learning_rate=1e-5, decay_rate=0.9999),
        sampling=SamplingConfig(schedule="teacher_forcing"),
        train=TrainConfig(
            batch_size=512,
            num_steps=200_000,
            eval_every=1000,
            eval_batches=8,
            log_every=100,
            checkpoint_every=1000,
            keep=3,
        ),
    )
