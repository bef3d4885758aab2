"""jax-musicvae: the danceability-conditioned MusicVAE in JAX/Flax.

Importing the package itself is cheap and framework-free: `config`, `schedules`
and `data` use numpy only, so `torch_reference` can share them without jax.
"""

__version__ = "0.1.0"
