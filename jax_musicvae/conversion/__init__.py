"""Checkpoint conversion: `parameters` maps torch state dicts to Flax parameters and back
(bit-exact), `torch_files` reads torch files without executing them, and `pipeline`
is `musicvae convert` (format detection, config inference, verification, writing).
"""
