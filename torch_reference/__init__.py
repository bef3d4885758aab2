"""PyTorch reference implementation of the conditioned MusicVAE (never imports jax)."""
