"""The original magenta-torch classes' state-dict keys and shapes, written out from the
table in seed-implementation.md (independently of the model code), for fixtures."""

from __future__ import annotations

# class -> (cell, conditioning)
ORIGINAL_CLASSES = {
    "MusicGRUVAE": ("gru", "none"),
    "MusicLSTMVAE": ("lstm", "none"),
    "DanceabilityGRUVAE": ("gru", "encoder"),
    "MuDanceVAE": ("gru", "latent"),
    "ZDanceVAE": ("gru", "decoder"),
}


def rnn_table(prefix: str, gates: int, hidden: int, inputs: list[int], bidirectional: bool):
    table = {}
    for k, in_size in enumerate(inputs):
        for suffix in ("", "_reverse") if bidirectional else ("",):
            table[f"{prefix}.weight_ih_l{k}{suffix}"] = (gates * hidden, in_size)
            table[f"{prefix}.weight_hh_l{k}{suffix}"] = (gates * hidden, hidden)
            table[f"{prefix}.bias_ih_l{k}{suffix}"] = (gates * hidden,)
            table[f"{prefix}.bias_hh_l{k}{suffix}"] = (gates * hidden,)
    return table


def original_table(
    cell: str, conditioning: str, encoder_hidden: int, decoder_hidden: int, latent: int, depth: int
) -> dict[str, tuple[int, ...]]:
    """One original class's state dict (2 layers everywhere): key -> shape."""
    he, hd = encoder_hidden, decoder_hidden
    gates = 4 if cell == "lstm" else 3
    head_in = 2 * he + (1 if conditioning == "encoder" else 0)
    enc_out = latent - 1 if conditioning == "decoder" else latent
    z_in = enc_out + 1 if conditioning == "latent" else enc_out
    table = rnn_table(f"encoder.bi{cell}", gates, he, [depth, 2 * he], bidirectional=True)
    table |= {
        "encoder.mu.weight": (enc_out, head_in),
        "encoder.mu.bias": (enc_out,),
        "encoder.sigma.weight": (enc_out, head_in),
        "encoder.sigma.bias": (enc_out,),
        "z_embedding.0.weight": (enc_out, z_in),
        "z_embedding.0.bias": (enc_out,),
        "decoder.conductor_embeddings.0.weight": (latent, hd),
        "decoder.conductor_embeddings.0.bias": (latent,),
        "decoder.out.0.weight": (depth, hd),
        "decoder.out.0.bias": (depth,),
    }
    table |= rnn_table("decoder.conductor", gates, hd, [latent, hd], bidirectional=False)
    table |= rnn_table(f"decoder.{cell}", gates, hd, [depth + latent, hd], bidirectional=False)
    return table
