"""Tests of the PyTorch reference: shapes, checkpoint compatibility, decoding semantics,
loss numbers, gradient clipping and the trainer. Tiny sizes: runs in seconds on CPU."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from original_checkpoints import ORIGINAL_CLASSES, original_table, rnn_table

from jax_musicvae import schedules
from jax_musicvae.config import LossConfig, ModelConfig, OptimConfig, SamplingConfig
from torch_reference.loss import elbo_loss
from torch_reference.model import MusicVAE
from torch_reference.train import clip_gradients, make_optimizer, sample_noise, train, train_step

B, D, S, U = 3, 7, 4, 3


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids spin-wait stalls on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CELLS = ("lstm", "gru")
CONDITIONINGS = ("none", "encoder", "latent", "decoder")
WIRINGS = ("original", "magenta")


def tiny_config(**changes) -> ModelConfig:
    base = dict(
        cell="gru",
        encoder_hidden=8,
        encoder_layers=2,
        decoder_hidden=8,
        decoder_layers=2,
        latent_size=6,
        num_bars=U,
        steps_per_bar=S,
        input_depth=D,
        conditioning="none",
        latent_condition_sigma=0.3,
        wiring="magenta",
    )
    base.update(changes)
    return ModelConfig(**base)


def make_model(seed: int = 0, **changes) -> MusicVAE:
    torch.manual_seed(seed)
    return MusicVAE(tiny_config(**changes)).eval()


def make_inputs(cfg: ModelConfig, batch: int = B, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = cfg.sequence_length
    return {
        "tokens": torch.randint(0, cfg.input_depth, (batch, T), generator=g),
        "condition": torch.rand(batch, generator=g),
        "eps": torch.randn(batch, cfg.z_size, generator=g),
        "choose_noise": torch.rand(batch, T, generator=g),
        "gumbel": -torch.log(-torch.log(torch.rand(batch, T, cfg.input_depth, generator=g))),
    }


# ---------------------------------------------------------------------------------
# Shapes and the latent bookkeeping of every variant


@pytest.mark.parametrize("num_bars", [1, U])
@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_output_shapes_and_latent_layout(conditioning, cell, wiring, num_bars):
    model = make_model(cell=cell, wiring=wiring, conditioning=conditioning, num_bars=num_bars)
    cfg = model.cfg
    x = make_inputs(cfg)
    T = cfg.sequence_length
    with torch.no_grad():
        out = model(x["tokens"], x["condition"], eps=x["eps"])
        ss = model(
            x["tokens"],
            x["condition"],
            eps=x["eps"],
            sampling_probability=0.5,
            choose_noise=x["choose_noise"],
            gumbel=x["gumbel"],
        )
    gen = model.generate(out["z"], x["condition"])

    n = cfg.z_size
    assert out["logits"].shape == (B, T, D) and out["logits"].dtype == torch.float32
    assert out["mu"].shape == out["sigma"].shape == out["z"].shape == (B, n)
    assert out["z_dec"].shape == (B, cfg.decoder_code_size)
    assert ss["sampled"].shape == (B, T) and ss["sampled"].dtype == torch.long
    assert ss["fed_back"].shape == (B, T) and ss["fed_back"].dtype == torch.bool
    assert gen["tokens"].shape == (B, T) and gen["tokens"].dtype == torch.long
    assert gen["logits"].shape == (B, T, D)
    assert "sampled" not in out

    torch.testing.assert_close(out["z"], out["mu"] + out["sigma"] * x["eps"], rtol=0, atol=0)
    assert bool((out["sigma"][:, : cfg.head_size] > 0).all())
    c = x["condition"]
    if conditioning == "latent":
        assert n == cfg.latent_size + 1
        torch.testing.assert_close(out["mu"][:, -1], c, rtol=0, atol=0)
        assert bool((out["sigma"][:, -1] == 0.3).all())
    if conditioning == "decoder":
        assert n == cfg.latent_size - 1
        torch.testing.assert_close(out["z_dec"][:, -1], c, rtol=0, atol=0)
    if wiring == "original":
        assert cfg.decoder_code_size == cfg.latent_size
        expected = torch.tanh(model.z_embedding[0](out["z"]))
        torch.testing.assert_close(out["z_dec"][:, : cfg.head_size], expected)
    elif conditioning != "decoder":
        torch.testing.assert_close(out["z_dec"], out["z"], rtol=0, atol=0)


def test_eps_none_means_mu_and_condition_changes_output():
    model = make_model(conditioning="decoder")
    x = make_inputs(model.cfg)
    with torch.no_grad():
        a = model(x["tokens"], x["condition"])
        b = model(x["tokens"], 1.0 - x["condition"])
    torch.testing.assert_close(a["z"], a["mu"], rtol=0, atol=0)
    assert (a["logits"] - b["logits"]).abs().max() > 1e-4


# ---------------------------------------------------------------------------------
# Parameter names and shapes, written out from seed-implementation.md's table

HE, HD, L, DEPTH = 8, 8, 6, 61


def original_table_small(cell: str, conditioning: str) -> dict[str, tuple[int, ...]]:
    return original_table(cell, conditioning, HE, HD, L, DEPTH)


@pytest.mark.parametrize("name", sorted(ORIGINAL_CLASSES))
def test_original_state_dicts_load_strictly(name):
    cell, conditioning = ORIGINAL_CLASSES[name]
    cfg = ModelConfig(
        cell=cell,
        encoder_hidden=HE,
        decoder_hidden=HD,
        latent_size=L,
        input_depth=DEPTH,
        num_bars=2,
        steps_per_bar=2,
        conditioning=conditioning,
        wiring="original",
    )
    model = MusicVAE(cfg)
    table = original_table_small(cell, conditioning)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == table
    g = torch.Generator().manual_seed(0)
    checkpoint = {k: torch.randn(shape, generator=g) for k, shape in table.items()}
    model.load_state_dict(checkpoint, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint[key])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_bars", [1, 2])
def test_magenta_parameter_names_and_shapes(cell, num_bars):
    model = make_model(cell=cell, num_bars=num_bars, conditioning="latent")
    G, k = (4, 2) if cell == "lstm" else (3, 1)
    Lz = 6 + 1  # latent conditioning: the decoder sees L + 1 dims with magenta wiring
    table = rnn_table(f"encoder.bi{cell}", G, 8, [D, 16], bidirectional=True)
    table.update(
        {
            "encoder.mu.weight": (6, 16),
            "encoder.mu.bias": (6,),
            "encoder.sigma.weight": (6, 16),
            "encoder.sigma.bias": (6,),
            "decoder.out.0.weight": (D, 8),
            "decoder.out.0.bias": (D,),
        }
    )
    if num_bars > 1:
        table.update(rnn_table("decoder.conductor", G, 8, [1, 8], bidirectional=False))
        table["decoder.conductor_initial_state.0.weight"] = (2 * k * 8, Lz)
        table["decoder.conductor_initial_state.0.bias"] = (2 * k * 8,)
        table["decoder.core_initial_state.0.weight"] = (2 * k * 8, 8)
        core_in = D + 8
    else:
        table["decoder.core_initial_state.0.weight"] = (2 * k * 8, Lz)
        core_in = D + Lz
    table["decoder.core_initial_state.0.bias"] = (2 * k * 8,)
    table.update(rnn_table(f"decoder.{cell}", G, 8, [core_in, 8], bidirectional=False))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == table


# ---------------------------------------------------------------------------------
# An independent step-by-step implementation of architecture.md, from the state dict


def _step(cell, w, x, h, c):
    w_ih, w_hh, b_ih, b_hh = w
    if cell == "lstm":
        i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, c


def _weights(sd, prefix, k, suffix=""):
    return [
        sd[f"{prefix}.{n}_l{k}{suffix}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]


def _linear(sd, prefix, x):
    return x @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]


def manual_forward(model: MusicVAE, tokens, condition, eps):
    """Per-example, per-step loops with explicit cell equations (no nn.LSTM/GRU)."""
    cfg, sd = model.cfg, {k: v.detach().double() for k, v in model.state_dict().items()}
    cell, H, Ld, T = cfg.cell, cfg.decoder_hidden, cfg.decoder_layers, cfg.sequence_length
    x = F.one_hot(tokens, cfg.input_depth).double()
    c = condition.double()[:, None]
    # Encoder.
    seq = [x[:, t] for t in range(T)]
    zeros = torch.zeros(tokens.shape[0], cfg.encoder_hidden, dtype=torch.float64)
    for k in range(cfg.encoder_layers):
        outs = {}
        for suffix, order in (("", range(T)), ("_reverse", reversed(range(T)))):
            w = _weights(sd, f"encoder.bi{cell}", k, suffix)
            h, cc = zeros, zeros
            for t in order:
                h, cc = _step(cell, w, seq[t], h, cc)
                outs[(suffix, t)] = h
        seq = [torch.cat([outs[("", t)], outs[("_reverse", t)]], -1) for t in range(T)]
    summary = torch.cat([seq[T - 1][:, : cfg.encoder_hidden], seq[0][:, cfg.encoder_hidden :]], -1)
    if cfg.conditioning == "encoder":
        summary = torch.cat([summary, c], -1)
    mu = _linear(sd, "encoder.mu", summary)
    sigma = F.softplus(_linear(sd, "encoder.sigma", summary))
    if cfg.conditioning == "latent":
        mu = torch.cat([mu, c], -1)
        sigma = torch.cat([sigma, torch.full_like(c, cfg.latent_condition_sigma)], -1)
    z = mu + sigma * eps.double()
    # Decoder code.
    h = torch.tanh(_linear(sd, "z_embedding.0", z)) if cfg.wiring == "original" else z
    z_dec = torch.cat([h, c], -1) if cfg.conditioning == "decoder" else h

    def run_stack(prefix, inp, states):
        new = []
        for k in range(Ld):
            hk, ck = _step(cell, _weights(sd, prefix, k), inp, *states[k])
            new.append((hk, ck))
            inp = hk
        return inp, new

    def split(flat):  # layer 0 (h, c), layer 1 (h, c), ...
        kk = 2 if cell == "lstm" else 1
        chunks = flat.split(H, dim=-1)
        return [(chunks[kk * k], chunks[kk * k + 1] if cell == "lstm" else None) for k in range(Ld)]

    zero_state = [(torch.zeros(len(z), H, dtype=torch.float64),) * 2 for _ in range(Ld)]
    # Bar embeddings.
    if cfg.wiring == "original":
        states, e = zero_state, []
        for _ in range(cfg.num_bars):
            top, states = run_stack("decoder.conductor", z_dec, states)
            e.append(torch.tanh(_linear(sd, "decoder.conductor_embeddings.0", top)))
    elif cfg.num_bars > 1:
        states = split(torch.tanh(_linear(sd, "decoder.conductor_initial_state.0", z_dec)))
        e = []
        for _ in range(cfg.num_bars):
            top, states = run_stack("decoder.conductor", torch.zeros(len(z), 1).double(), states)
            e.append(top)
    else:
        e = [z_dec]
    # Core decoder, teacher forced, one step at a time across the whole sequence.
    logits = []
    for t in range(T):
        u, s = divmod(t, cfg.steps_per_bar)
        if s == 0:
            if cfg.wiring == "original":
                states = zero_state
            else:
                states = split(torch.tanh(_linear(sd, "decoder.core_initial_state.0", e[u])))
        prev = x[:, t - 1] if t > 0 else torch.zeros_like(x[:, 0])
        top, states = run_stack(f"decoder.{cell}", torch.cat([prev, e[u]], -1), states)
        logits.append(_linear(sd, "decoder.out.0", top))
    return mu, sigma, torch.stack(logits, 1)


@pytest.mark.parametrize(
    "cell,wiring,conditioning,num_bars",
    [
        ("lstm", "magenta", "none", U),
        ("gru", "magenta", "latent", U),
        ("lstm", "magenta", "decoder", 1),
        ("gru", "magenta", "encoder", 1),
        ("lstm", "original", "encoder", U),
        ("gru", "original", "decoder", U),
        ("gru", "original", "latent", 1),
    ],
)
def test_matches_independent_step_by_step_implementation(cell, wiring, conditioning, num_bars):
    model = make_model(cell=cell, wiring=wiring, conditioning=conditioning, num_bars=num_bars)
    with torch.no_grad():  # larger biases so that every term matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = make_inputs(model.cfg)
    with torch.no_grad():
        out = model(x["tokens"], x["condition"], eps=x["eps"])
    mu, sigma, logits = manual_forward(model, x["tokens"], x["condition"], x["eps"])
    torch.testing.assert_close(out["mu"].double(), mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["sigma"].double(), sigma, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["logits"].double(), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_encoder_does_not_mix_examples(cell):
    model = make_model(cell=cell, conditioning="encoder")
    x = make_inputs(model.cfg, batch=4)
    with torch.no_grad():
        mu, sigma = model.encode(x["tokens"], x["condition"])
        mu0, sigma0 = model.encode(x["tokens"][:1], x["condition"][:1])
        mu_r, _ = model.encode(x["tokens"].flip(0), x["condition"].flip(0))
    torch.testing.assert_close(mu[:1], mu0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sigma[:1], sigma0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mu_r.flip(0), mu, rtol=1e-6, atol=1e-6)
    assert (mu[0] - mu[1]).abs().max() > 1e-4  # different inputs, different codes


# ---------------------------------------------------------------------------------
# Scheduled sampling and generation


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_teacher_forcing_equals_scheduled_sampling_at_p0(cell, wiring):
    model = make_model(cell=cell, wiring=wiring, conditioning="decoder")
    x = make_inputs(model.cfg)
    with torch.no_grad():
        tf = model(x["tokens"], x["condition"], eps=x["eps"])
        logits, _, fed = model.decoder.scheduled(
            x["tokens"], tf["z_dec"], 0.0, x["choose_noise"], x["gumbel"]
        )
        tiny_p = model(
            x["tokens"],
            x["condition"],
            eps=x["eps"],
            sampling_probability=1e-12,
            choose_noise=x["choose_noise"].clamp_min(1e-6),
            gumbel=x["gumbel"],
        )
    assert not bool(fed.any()) and not bool(tiny_p["fed_back"].any())
    torch.testing.assert_close(logits, tf["logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiny_p["logits"], tf["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_scheduled_sampling_feeds_back_previous_sample(cell, wiring, p):
    model = make_model(cell=cell, wiring=wiring)
    cfg = model.cfg
    x = make_inputs(cfg)
    temperature = 0.7
    with torch.no_grad():
        out = model(
            x["tokens"],
            eps=x["eps"],
            sampling_probability=p,
            choose_noise=x["choose_noise"],
            gumbel=x["gumbel"],
            temperature=temperature,
        )
    T = cfg.sequence_length
    bar_start = torch.arange(T) % cfg.steps_per_bar == 0
    expected_fed = (x["choose_noise"] < p) & ~bar_start
    assert torch.equal(out["fed_back"], expected_fed)
    if p == 1.0:
        assert torch.equal(out["fed_back"], ~bar_start.expand(B, T))
    else:
        assert 0 < int(out["fed_back"].sum()) < int((~bar_start).sum()) * B
    # The samples are the Gumbel-max of this step's logits.
    expected_sampled = torch.argmax(out["logits"] / temperature + x["gumbel"], dim=-1)
    assert torch.equal(out["sampled"], expected_sampled)
    # Recompute with teacher forcing on the sequence that was actually fed in:
    # position t read sampled[t-1] where fed_back[t], else tokens[t-1].
    fed_input = x["tokens"].clone()
    fed_input[:, :-1] = torch.where(
        out["fed_back"][:, 1:], out["sampled"][:, :-1], fed_input[:, :-1]
    )
    assert not torch.equal(fed_input, x["tokens"])
    with torch.no_grad():
        replay = model.decoder.teacher_forced(fed_input, out["z_dec"])
    torch.testing.assert_close(out["logits"], replay, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_scheduled_sampling_gradient_flows_only_through_logits(cell, wiring):
    model = make_model(cell=cell, wiring=wiring)
    x = make_inputs(model.cfg)
    out = model(
        x["tokens"],
        eps=x["eps"],
        sampling_probability=1.0,
        choose_noise=x["choose_noise"],
        gumbel=x["gumbel"],
    )
    out["logits"].sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_scheduled_sampling_two_passes_equal_the_differentiated_loop(cell, wiring):
    """The sampling loop without autograd and the teacher-forced pass over what it fed
    give the loop's own logits, samples and gradients."""
    model = make_model(cell=cell, wiring=wiring)
    x = make_inputs(model.cfg)
    keep = torch.rand(x["tokens"].shape, generator=torch.Generator().manual_seed(2)) > 0.25
    weights = torch.randn(B, U * S, D, generator=torch.Generator().manual_seed(3))
    results = []
    for loop_gradient in (False, True):
        model.zero_grad(set_to_none=True)
        out = model(
            x["tokens"],
            x["condition"],
            x["eps"],
            sampling_probability=0.5,
            choose_noise=x["choose_noise"],
            gumbel=x["gumbel"],
            temperature=0.8,
            token_keep=keep.float(),
            loop_gradient=loop_gradient,
        )
        (out["logits"] * weights).sum().backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (two_pass, two_pass_grads), (loop, loop_grads) = results
    assert two_pass["fed_back"].any() and torch.equal(two_pass["sampled"], loop["sampled"])
    torch.testing.assert_close(two_pass["logits"], loop["logits"], rtol=1e-5, atol=1e-6)
    assert two_pass_grads.keys() == loop_grads.keys()
    for name, grad in loop_grads.items():
        torch.testing.assert_close(two_pass_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("num_bars", [1, U])
@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_generation_is_consistent_with_teacher_forcing(cell, wiring, num_bars):
    model = make_model(cell=cell, wiring=wiring, num_bars=num_bars, conditioning="decoder")
    x = make_inputs(model.cfg)
    with torch.no_grad():
        model.decoder.out[0].bias.copy_(torch.linspace(-1, 1, D))  # varied tokens
    z = 2.0 * x["eps"]
    first = model.generate(z, x["condition"])
    second = model.generate(z, x["condition"])
    assert torch.equal(first["tokens"], second["tokens"])
    assert torch.equal(first["logits"], second["logits"])
    assert torch.equal(first["tokens"], first["logits"].argmax(-1))
    with torch.no_grad():
        z_dec = model.decoder_code(z, x["condition"])
        replay = model.decoder.teacher_forced(first["tokens"], z_dec)
    torch.testing.assert_close(first["logits"], replay, rtol=1e-5, atol=1e-6)
    assert torch.equal(replay.argmax(-1), first["tokens"])

    sampled = model.generate(z, x["condition"], temperature=0.5, gumbel=x["gumbel"])
    expected = torch.argmax(sampled["logits"] / 0.5 + x["gumbel"], dim=-1)
    assert torch.equal(sampled["tokens"], expected)
    assert not torch.equal(sampled["tokens"], first["tokens"])
    with torch.no_grad():
        replay = model.decoder.teacher_forced(sampled["tokens"], z_dec)
    torch.testing.assert_close(sampled["logits"], replay, rtol=1e-5, atol=1e-6)
    # Any batch size, and examples are decoded independently.
    single = model.generate(z[1:2], x["condition"][1:2])
    assert torch.equal(single["tokens"][0], first["tokens"][1])


# ---------------------------------------------------------------------------------
# Loss against hand-computed values

LOGITS = torch.tensor(
    [[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[2.0, 0.0, -1.0], [1.0, 1.0, 3.0]]]
)  # [B=2, T=2, D=3]
TOKENS = torch.tensor([[2, 0], [1, 2]])


def _ce(row, target):
    return math.log(sum(math.exp(v) for v in row)) - row[target]


def _loss_model_config(latent_size=2, conditioning="none"):
    return tiny_config(latent_size=latent_size, conditioning=conditioning, input_depth=3)


def test_categorical_loss_kl_and_free_bits_by_hand():
    mu = torch.tensor([[0.5, -1.0], [0.0, 0.0]])
    sigma = torch.tensor([[1.0, 0.5], [1.0, 1.0]])
    loss_cfg = LossConfig(recon_loss="categorical", free_bits=1.0)
    loss, m = elbo_loss(LOGITS, TOKENS, mu, sigma, loss_cfg, _loss_model_config(), beta=0.5)

    rows = LOGITS.tolist()
    r = [_ce(rows[0][0], 2) + _ce(rows[0][1], 0), _ce(rows[1][0], 1) + _ce(rows[1][1], 2)]
    # 0.5 * [(1 + 0.25 - 1 - 0) + (0.25 + 1 - 1 - 2 ln 0.5)] = 0.25 + ln 2
    kl = [0.25 + math.log(2.0), 0.0]
    kl_cost = [max(k - math.log(2.0), 0.0) for k in kl]  # one free bit: [0.25, 0]
    recon = sum(r) / 2
    expected_loss = recon + 0.5 * sum(kl_cost) / 2
    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    assert m["recon"].item() == pytest.approx(recon, rel=1e-6)
    assert m["kl"].item() == pytest.approx(sum(kl) / 2, rel=1e-6)
    assert m["kl_bits"].item() == pytest.approx(sum(kl) / 2 / math.log(2.0), rel=1e-6)
    assert m["kl_cost"].item() == pytest.approx(0.125, rel=1e-6)
    assert m["beta"].item() == 0.5
    assert m["elbo"].item() == pytest.approx(-(sum(r) + sum(kl)) / 2, rel=1e-6)
    # argmax: [2, 0 (tie -> first)], [0, 2] vs tokens [2, 0], [1, 2]: 3 of 4.
    assert m["accuracy"].item() == pytest.approx(0.75)

    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss_m, m_m = elbo_loss(
        LOGITS, TOKENS, mu, sigma, LossConfig(), _loss_model_config(), beta=0.0, mask=mask
    )
    recon_masked = (_ce(rows[0][0], 2) + r[1]) / 2
    assert loss_m.item() == pytest.approx(recon_masked, rel=1e-6)
    assert m_m["accuracy"].item() == pytest.approx(2 / 3)


def test_kl_leaves_out_the_appended_condition_and_decoder_dimension():
    mu = torch.tensor([[0.5, -1.0, 0.9], [0.0, 0.0, 0.2]])
    sigma = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]])  # c's sigma 0: log 0 excluded
    _, m = elbo_loss(
        LOGITS, TOKENS, mu, sigma, LossConfig(), _loss_model_config(2, "latent"), beta=1.0
    )
    assert m["kl"].item() == pytest.approx((0.25 + math.log(2.0)) / 2, rel=1e-6)
    # decoder conditioning: head_size = L - 1 = 2 here.
    _, m = elbo_loss(
        LOGITS,
        TOKENS,
        mu[:, :2],
        sigma[:, :2],
        LossConfig(),
        _loss_model_config(3, "decoder"),
        beta=1.0,
    )
    assert m["kl"].item() == pytest.approx((0.25 + math.log(2.0)) / 2, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 5.0])
def test_bernoulli_loss_matches_bce_on_softmax(smoothing):
    mu, sigma = torch.zeros(2, 2), torch.ones(2, 2)
    cfg = LossConfig(recon_loss="bernoulli", target_smoothing=smoothing)
    loss, m = elbo_loss(LOGITS, TOKENS, mu, sigma, cfg, _loss_model_config(), beta=1.0)
    y = F.one_hot(TOKENS, 3).float()
    if smoothing:
        y = torch.softmax(smoothing * y, -1)
    p = torch.softmax(LOGITS, -1)
    expected = F.binary_cross_entropy(p, y, reduction="sum") / 2  # per example, batch mean
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert m["kl"].item() == 0.0
    # By hand for one step without smoothing: -[log p_2 + log(1-p_0) + log(1-p_1)].
    if not smoothing:
        q = [math.exp(v) for v in (1.0, 2.0, 3.0)]
        q = [v / sum(q) for v in q]
        step = -(math.log(q[2]) + math.log(1 - q[0]) + math.log(1 - q[1]))
        one = torch.softmax(LOGITS[:1, :1], -1)
        ref = F.binary_cross_entropy(one, F.one_hot(TOKENS[:1, :1], 3).float(), reduction="sum")
        assert ref.item() == pytest.approx(step, rel=1e-6)


def test_bernoulli_clamps_logs_at_minus_100_with_finite_gradient():
    logits = torch.tensor([[[0.0, 200.0, 0.0]]], requires_grad=True)  # p = [0, 1, 0] in fp32
    tokens = torch.tensor([[0]])
    cfg = LossConfig(recon_loss="bernoulli")
    loss, _ = elbo_loss(
        logits, tokens, torch.zeros(1, 2), torch.ones(1, 2), cfg, _loss_model_config(), 1.0
    )
    # y = [1, 0, 0]: log p_0 = -200 -> -100; log(1 - p_1) = -inf -> -100; log(1 - p_2) = 0.
    assert loss.item() == pytest.approx(200.0)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------------
# Optimisation


def _linear_with_grads(weight_grad, bias_grad):
    layer = torch.nn.Linear(2, 1)
    layer.weight.grad = torch.tensor([weight_grad])
    layer.bias.grad = torch.tensor([bias_grad])
    return layer


def test_clip_gradients_scales_keeps_or_zeroes():
    layer = _linear_with_grads([3.0, 0.0], 4.0)  # global norm 5
    assert clip_gradients(layer, OptimConfig(clip_norm=1.0, zero_grad_norm=10.0)) == 5.0
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[0.6, 0.0]]))
    torch.testing.assert_close(layer.bias.grad, torch.tensor([0.8]))

    layer = _linear_with_grads([3.0, 0.0], 4.0)
    assert clip_gradients(layer, OptimConfig(clip_norm=10.0, zero_grad_norm=100.0)) == 5.0
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[3.0, 0.0]]))

    layer = _linear_with_grads([3.0, 0.0], 4.0)
    assert clip_gradients(layer, OptimConfig(clip_norm=1.0, zero_grad_norm=4.9)) == 5.0
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_optimizer_is_configured_adam():
    model = make_model()
    opt = make_optimizer(model, OptimConfig(adam_b1=0.8, adam_b2=0.99, adam_eps=1e-6))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam)
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in model.parameters())


def test_train_step_uses_schedules_and_updates():
    model = make_model(conditioning="encoder", wiring="original")
    x = make_inputs(model.cfg)
    loss_cfg = LossConfig(free_bits=0.0, max_beta=0.5, beta_rate=0.9)
    optim_cfg = OptimConfig(learning_rate=1e-2, decay_rate=0.5)
    sampling_cfg = SamplingConfig(schedule="exponential", rate=0.5)
    opt = make_optimizer(model, optim_cfg)
    before = [p.detach().clone() for p in model.parameters()]
    batch = {"tokens": x["tokens"], "condition": x["condition"]}
    step = 3
    m = train_step(
        model, opt, batch, step, loss_cfg, optim_cfg, sampling_cfg,
        x["eps"], x["choose_noise"], x["gumbel"],
    )  # fmt: skip
    assert opt.param_groups[0]["lr"] == schedules.learning_rate(step, optim_cfg)
    assert m["learning_rate"] == pytest.approx((1e-2 - 1e-5) * 0.125 + 1e-5)
    assert m["beta"] == pytest.approx(0.5 * (1 - 0.9**3))
    assert m["sampling_probability"] == pytest.approx(1 - 0.5**3)
    assert m["grad_norm"] > 0 and math.isfinite(m["loss"])
    assert m["loss"] == pytest.approx(m["recon"] + m["beta"] * m["kl_cost"], rel=1e-5)
    # Adam's first step moves every parameter with a non-zero gradient by about lr.
    moved = [
        (p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before, strict=True)
    ]
    assert max(moved) == pytest.approx(m["learning_rate"], rel=1e-3)


def _numpy_batches(cfg, n, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.input_depth, size=(4, cfg.sequence_length))
    condition = rng.random(4).astype(np.float32)
    for _ in range(n):
        yield {"tokens": tokens, "condition": condition}


def test_train_is_deterministic_and_learns():
    def run():
        model = make_model(seed=5, conditioning="decoder", dropout=0.2, encoder_layers=2)
        cfgs = (
            LossConfig(max_beta=0.1),
            OptimConfig(learning_rate=3e-2, decay_rate=0.99),
            SamplingConfig(schedule="constant", rate=0.3),
        )
        rng_before = torch.get_rng_state()
        history = train(model, _numpy_batches(model.cfg, 30), 25, *cfgs, seed=7)
        assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG left alone
        return history

    first, second = run(), run()
    assert len(first) == 25
    assert first == second
    assert first[-1]["recon"] < 0.85 * first[0]["recon"]  # memorising 4 sequences


def test_train_gaussianises_the_condition_for_the_attribute_loss():
    model = make_model(seed=5, conditioning="none")
    quantiles = tuple(np.linspace(0.0, 1.0, 11))
    loss = LossConfig(
        attribute_loss="sign", attribute_decorrelation=1.0, attribute_quantiles=quantiles
    )
    cfgs = (loss, OptimConfig(learning_rate=3e-2), SamplingConfig())
    history = train(model, _numpy_batches(model.cfg, 12), 12, *cfgs, seed=7)
    assert all(math.isfinite(h["attribute_regulariser"]) for h in history)
    assert history[-1]["attribute_regulariser"] < history[0]["attribute_regulariser"]
    unfrozen = dataclasses.replace(loss, attribute_quantiles=())
    with pytest.raises(ValueError, match="needs each batch's `condition` and loss.attribute"):
        train(model, _numpy_batches(model.cfg, 1), 1, unfrozen, *cfgs[1:], seed=7)


def test_sample_noise_shapes_and_determinism():
    cfg = tiny_config(conditioning="latent")
    a = sample_noise(cfg, 2, torch.Generator().manual_seed(3))
    b = sample_noise(cfg, 2, torch.Generator().manual_seed(3))
    assert a["eps"].shape == (2, cfg.z_size)
    assert a["choose_noise"].shape == (2, cfg.sequence_length)
    assert a["gumbel"].shape == (2, cfg.sequence_length, cfg.input_depth)
    assert a["token_keep"] is None
    assert all(torch.equal(a[k], b[k]) for k in a if a[k] is not None)
    assert torch.isfinite(a["gumbel"]).all()
    big = sample_noise(tiny_config(num_bars=50, input_depth=90), 20, torch.Generator())
    assert big["gumbel"].mean().item() == pytest.approx(0.5772, abs=0.02)  # Euler-Mascheroni
    assert big["gumbel"].var().item() == pytest.approx(math.pi**2 / 6, rel=0.05)
    assert sample_noise(cfg, 2, torch.Generator(), scheduled=False)["gumbel"] is None


# ---------------------------------------------------------------------------------
# Errors and isolation from jax


def test_clear_errors_for_bad_inputs():
    model = make_model(conditioning="encoder")
    x = make_inputs(model.cfg)
    tok, cond = x["tokens"], x["condition"]
    with pytest.raises(ValueError, match=r"tokens .*\[B, T=12\]"):
        model(tok[:, :-1], cond)
    with pytest.raises(ValueError, match="tokens"):
        model(tok.float(), cond)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 7\)"):
        model(torch.full_like(tok, D), cond)
    with pytest.raises(ValueError, match=r"tokens must lie"):
        model(tok - 1, cond)
    with pytest.raises(ValueError, match=r"condition is required .*\[B=3\]"):
        model(tok)
    with pytest.raises(ValueError, match=r"condition must be a tensor of shape \[B=3\]"):
        model(tok, cond[:, None])
    with pytest.raises(ValueError, match=r"eps must be a tensor of shape \[B=3, z_size=6\]"):
        model(tok, cond, eps=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="choose_noise"):
        model(tok, cond, sampling_probability=0.5)
    with pytest.raises(ValueError, match=r"gumbel must be a tensor of shape \[B=3, T=12, D=7\]"):
        model(tok, cond, sampling_probability=0.5, choose_noise=x["choose_noise"], gumbel=x["eps"])
    with pytest.raises(ValueError, match="sampling_probability"):
        model(tok, cond, sampling_probability=1.5)
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \[B, z_size=6\]"):
        model.generate(torch.zeros(3, 7))
    decoder_model = make_model(conditioning="decoder")
    with pytest.raises(ValueError, match="condition is required"):
        decoder_model.generate(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="condition is required"):
        make_model(conditioning="latent").encode(tok)
    # Conditioning 'none' ignores a condition; 'decoder' does not need one to encode.
    plain = make_model()
    torch.testing.assert_close(plain(tok, cond)["logits"], plain(tok)["logits"])
    decoder_model.encode(tok)


def test_torch_reference_never_imports_jax():
    code = (
        "import sys, torch_reference.model, torch_reference.loss, torch_reference.train; "
        "assert 'jax' not in sys.modules and 'flax' not in sys.modules, 'jax imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sample_noise_token_dropout():
    cfg = tiny_config(num_bars=50, input_depth=9)
    plain = sample_noise(cfg, 20, torch.Generator().manual_seed(0), scheduled=False)
    assert plain["token_keep"] is None
    noise = sample_noise(cfg, 20, torch.Generator().manual_seed(0), False, token_dropout=0.25)
    keep = noise["token_keep"]
    assert keep.shape == (20, cfg.sequence_length)
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    assert abs(float(keep.mean()) - 0.75) < 0.03
    torch.testing.assert_close(noise["eps"], plain["eps"])
