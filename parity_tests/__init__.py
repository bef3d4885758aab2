"""Parity suite: the Flax model against the torch reference (`musicvae parity`)."""
