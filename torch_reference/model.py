"""PyTorch reference MusicVAE, written against docs/architecture.md.

It is the yardstick the Flax port is compared with, so it favours plain, idiomatic
torch: whole-sequence `nn.LSTM`/`nn.GRU` calls, and all bars of a batch decoded as
one batch of B*U sequences of S steps once the conductor has run. With
`wiring='original'` the `state_dict()` keys and shapes are those of the original
magenta-torch classes, so their checkpoints load with `strict=True`.

The reference computes in its parameter dtype (float32 unless the module is cast);
`ModelConfig.compute_dtype` is a Flax-side setting and is ignored here. Never
import jax from this package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jax_musicvae.config import FIRST_NOTE_ON, ModelConfig

RNNState = Tensor | tuple[Tensor, Tensor]


def _rnn(cell: str, input_size: int, hidden: int, layers: int, dropout: float, **kw) -> nn.RNNBase:
    """A batch-first torch LSTM/GRU stack (dropout between layers only, as torch does)."""
    rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
    return rnn_cls(
        input_size,
        hidden,
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,  # torch warns on dropout with one layer
        **kw,
    )


def _split_state(flat: Tensor, cell: str, layers: int, hidden: int) -> RNNState:
    """[N, layers*k*H] -> torch's [layers, N, H] state(s).

    Layout (architecture.md): chunks of H ordered layer 0 (h, c), layer 1 (h, c), ...
    for LSTM and layer 0 h, layer 1 h, ... for GRU.
    """
    k = 2 if cell == "lstm" else 1
    parts = flat.reshape(flat.shape[0], layers, k, hidden).permute(2, 1, 0, 3)
    if cell == "lstm":
        return parts[0].contiguous(), parts[1].contiguous()
    return parts[0].contiguous()


def note_ons(tokens: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, T] 1 where a melody90 token starts a note: the rhythm decoder's targets."""
    return (tokens >= FIRST_NOTE_ON).to(dtype)


def note_on_flags(rhythm_logits: Tensor) -> Tensor:
    """The rhythm decoder's note-on flags [B, T] (1 where its logit > 0), without gradient."""
    return (rhythm_logits.detach() > 0).to(rhythm_logits.dtype)


def _tokens_error(name: str, cfg: ModelConfig, got: object) -> ValueError:
    return ValueError(
        f"{name} must be an integer tensor of shape [B, T={cfg.sequence_length}] with values "
        f"in [0, {cfg.input_depth}); got {_describe(got)}"
    )


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"shape {list(x.shape)} dtype {x.dtype}"
    return type(x).__name__


def _check_float(name: str, x: object, shape: tuple[int, ...], expected: str) -> Tensor:
    """Reject a non-tensor or wrong-shaped float input with a message naming it."""
    if not isinstance(x, Tensor) or tuple(x.shape) != shape:
        raise ValueError(f"{name} must be a tensor of shape {expected}; got {_describe(x)}")
    if x.dtype == torch.bool:
        raise ValueError(f"{name} must be a numeric tensor; got dtype {x.dtype}")
    return x


class Encoder(nn.Module):
    """Bidirectional stack over one-hot tokens; mu and softplus sigma heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._rnn_name = "bi" + cfg.cell
        rnn = _rnn(
            cfg.cell,
            cfg.input_depth,
            cfg.encoder_hidden,
            cfg.encoder_layers,
            cfg.dropout,
            bidirectional=True,
        )
        self.add_module(self._rnn_name, rnn)
        self.mu = nn.Linear(cfg.readout_size, cfg.head_size)
        self.sigma = nn.Linear(cfg.readout_size, cfg.head_size)

    @property
    def rnn(self) -> nn.RNNBase:
        return getattr(self, self._rnn_name)

    def forward(self, x: Tensor, condition: Tensor | None) -> tuple[Tensor, Tensor]:
        outputs, state = self.rnn(x)
        if every := self.cfg.encoder_readout_steps:
            # Forward output at each chunk's end, backward output at its start.
            hidden = self.cfg.encoder_hidden
            chunks = outputs.reshape(x.shape[0], -1, every, 2 * hidden)
            h = torch.cat([chunks[:, :, -1, :hidden], chunks[:, :, 0, hidden:]], dim=-1)
            h = h.reshape(x.shape[0], -1)
        else:
            h_n = state[0] if isinstance(state, tuple) else state  # [Le*2, B, He]
            # Last layer, forward then backward, concatenated per example (the
            # original's reshape mixed examples when B > 1; defect 1).
            h = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        if self.cfg.conditioning == "encoder":
            h = torch.cat([h, condition[:, None]], dim=-1)
        mu = self.mu(h)
        sigma = F.softplus(self.sigma(h))
        if self.cfg.conditioning == "latent":
            mu = torch.cat([mu, condition[:, None]], dim=-1)
            fixed = torch.full_like(sigma[:, :1], self.cfg.latent_condition_sigma)
            sigma = torch.cat([sigma, fixed], dim=-1)
        return mu, sigma


class Decoder(nn.Module):
    """Conductor (if hierarchical) plus core decoder, for both wirings.

    The conductor depends only on the code, so after it has run every bar is an
    independent sequence of S steps; teacher forcing and scheduled sampling decode
    all bars of the batch together as N = B*U sequences (row b*U + u).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H, layers, Lz = cfg.decoder_hidden, cfg.decoder_layers, cfg.decoder_code_size
        k = 2 if cfg.cell == "lstm" else 1
        if cfg.wiring == "original":
            self.conductor = _rnn(cfg.cell, Lz, H, layers, cfg.dropout)
            self.conductor_embeddings = nn.Sequential(nn.Linear(H, cfg.latent_size), nn.Tanh())
            embedding_size = cfg.latent_size
        elif cfg.hierarchical:
            self.conductor = _rnn(cfg.cell, 1, H, layers, cfg.dropout)
            self.conductor_initial_state = nn.Sequential(nn.Linear(Lz, layers * k * H), nn.Tanh())
            self.core_initial_state = nn.Sequential(nn.Linear(H, layers * k * H), nn.Tanh())
            embedding_size = H
        else:
            self.core_initial_state = nn.Sequential(nn.Linear(Lz, layers * k * H), nn.Tanh())
            embedding_size = Lz
        self._rnn_name = cfg.cell
        # The core reads [previous token one-hot, note-on flag (rhythm decoder), context].
        core_input = cfg.input_depth + (1 if cfg.rhythm_hidden else 0) + embedding_size
        self.add_module(self._rnn_name, _rnn(cfg.cell, core_input, H, layers, cfg.dropout))
        self.out = nn.Sequential(nn.Linear(H, cfg.input_depth))  # index 0 as in the original

    @property
    def rnn(self) -> nn.RNNBase:
        return getattr(self, self._rnn_name)

    def _initial_state(self, module: nn.Module, x: Tensor) -> RNNState:
        cfg = self.cfg
        return _split_state(module(x), cfg.cell, cfg.decoder_layers, cfg.decoder_hidden)

    def bar_context(self, z_dec: Tensor) -> Tensor:
        """[B, Lz] -> [B, U, E]: what every step of bar u is conditioned on."""
        cfg = self.cfg
        B, U = z_dec.shape[0], cfg.num_bars
        if cfg.wiring == "original":
            out, _ = self.conductor(z_dec[:, None, :].expand(B, U, z_dec.shape[1]))
            return self.conductor_embeddings(out)
        if cfg.hierarchical:
            state = self._initial_state(self.conductor_initial_state, z_dec)
            out, _ = self.conductor(z_dec.new_zeros(B, U, 1), state)
            return out
        return z_dec[:, None, :]

    def _core_state(self, e: Tensor) -> RNNState | None:
        """Initial core state for bars with embeddings e [N, E] (zeros for `original`)."""
        if self.cfg.wiring == "original":
            return None
        return self._initial_state(self.core_initial_state, e)

    def _previous_one_hot(self, tokens: Tensor, dtype: torch.dtype) -> Tensor:
        """One-hot of tokens[t-1] for every t, all zeros at t = 0: [B, T, D]."""
        one_hot = F.one_hot(tokens, self.cfg.input_depth).to(dtype)
        return F.pad(one_hot, (0, 0, 1, 0))[:, :-1]

    def _with_onsets(self, prev: Tensor, onsets: Tensor | None) -> Tensor:
        """[..., D] previous-token inputs -> [..., D + 1] with the note-on flag (rhythm decoder)."""
        if not self.cfg.rhythm_hidden:
            return prev
        return torch.cat([prev, onsets[..., None]], dim=-1)

    def teacher_forced(
        self,
        tokens: Tensor,
        z_dec: Tensor,
        token_keep: Tensor | None = None,
        onsets: Tensor | None = None,
    ) -> Tensor:
        """Logits [B, T, D] with the ground truth as previous token (one RNN call).

        `token_keep` [B, T] (1 keep, 0 drop) zeroes dropped steps' previous-token input;
        `onsets` [B, T] are the note-on flags a rhythm decoder's model reads.
        """
        cfg = self.cfg
        B, U, S, D = tokens.shape[0], cfg.num_bars, cfg.steps_per_bar, cfg.input_depth
        e = self.bar_context(z_dec)  # [B, U, E]
        prev = self._previous_one_hot(tokens, z_dec.dtype)
        if token_keep is not None:
            prev = prev * token_keep[:, :, None]
        prev = self._with_onsets(prev, onsets).reshape(B * U, S, -1)
        return self._fed_core(prev, e.reshape(B * U, -1)).reshape(B, U * S, D)

    def _fed_core(self, prev: Tensor, e: Tensor) -> Tensor:
        """Logits [N, S, D] of the core over N bars fed prev [N, S, D (+1)] (one RNN call)."""
        S = prev.shape[1]
        x = torch.cat([prev, e[:, None, :].expand(-1, S, -1)], dim=-1)
        out, _ = self.rnn(x, self._core_state(e))
        return self.out(out)

    def scheduled(
        self,
        tokens: Tensor,
        z_dec: Tensor,
        sampling_probability: float,
        choose_noise: Tensor,
        gumbel: Tensor,
        temperature: float = 1.0,
        token_keep: Tensor | None = None,
        onsets: Tensor | None = None,
        loop_gradient: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits [B, T, D], sampled [B, T], fed_back [B, T] (architecture.md).

        Bar starts always read the truth, so the loop runs over the S steps of a
        bar with all B*U bars batched. The samples carry no gradient, so the loop runs
        without autograd and the core then reads what it fed in one call, as teacher
        forcing does: the same logits and gradients at teacher forcing's cost. With
        dropout in training, or `loop_gradient` (what the parity suite checks the two
        passes against), the loop is differentiated instead: nn.LSTM draws its own
        dropout masks, so a second pass would run another network. `token_keep` [B, T] zeroes
        the fed input; the note-on flags `onsets` [B, T] (rhythm decoder) are always
        the given ones.
        """
        cfg = self.cfg
        B, U, S, D = tokens.shape[0], cfg.num_bars, cfg.steps_per_bar, cfg.input_depth
        N = B * U
        e = self.bar_context(z_dec).reshape(N, -1)
        step_in_bar = torch.arange(S, device=tokens.device)
        fed_back = (choose_noise.reshape(N, S) < sampling_probability) & (step_in_bar >= 1)
        feeds = (
            self._previous_one_hot(tokens, z_dec.dtype).reshape(N, S, D),
            fed_back,
            gumbel.reshape(N, S, D),
            None if token_keep is None else token_keep.reshape(N, S),
            None if onsets is None else onsets.reshape(N, S),
        )
        if loop_gradient or (self.training and self.rnn.dropout > 0.0):
            _, logits, sampled = self.sampling_loop(e, *feeds, temperature)
        else:
            with torch.no_grad():
                fed, _, sampled = self.sampling_loop(e, *feeds, temperature)
            logits = self._fed_core(fed, e)
        return (
            logits.reshape(B, U * S, D),
            sampled.reshape(B, U * S),
            fed_back.reshape(B, U * S),
        )

    def sampling_loop(
        self,
        e: Tensor,
        truth: Tensor,
        fed_back: Tensor,
        gumbel: Tensor,
        keep: Tensor | None,
        onsets: Tensor | None,
        temperature: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Scheduled sampling step by step over N bars: what each step read [N, S, D (+1)],
        its logits [N, S, D] and its sample [N, S]."""
        state = self._core_state(e)
        fed, logits, sampled = [], [], []
        for s in range(truth.shape[1]):
            prev = truth[:, s]
            if s > 0:
                sample = F.one_hot(sampled[-1], truth.shape[-1]).to(prev.dtype)
                prev = torch.where(fed_back[:, s, None], sample, prev)
            if keep is not None:
                prev = prev * keep[:, s, None]
            prev = self._with_onsets(prev, None if onsets is None else onsets[:, s])
            out, state = self.rnn(torch.cat([prev, e], dim=-1)[:, None], state)
            step_logits = self.out(out[:, 0])
            fed.append(prev)
            logits.append(step_logits)
            sampled.append(torch.argmax(step_logits.detach() / temperature + gumbel[:, s], dim=-1))
        return torch.stack(fed, dim=1), torch.stack(logits, dim=1), torch.stack(sampled, dim=1)

    def generate(
        self,
        z_dec: Tensor,
        temperature: float = 1.0,
        gumbel: Tensor | None = None,
        onsets: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Free-running decoding one step at a time; bar u starts from bar u-1's last token.

        `onsets` [B, T]: the note-on flags a rhythm decoder's model reads."""
        cfg = self.cfg
        B, U, S, D = z_dec.shape[0], cfg.num_bars, cfg.steps_per_bar, cfg.input_depth
        e = self.bar_context(z_dec)
        prev = z_dec.new_zeros(B, D)
        logits, tokens = [], []
        for u in range(U):
            state = self._core_state(e[:, u])
            for s in range(S):
                flag = None if onsets is None else onsets[:, u * S + s]
                x = torch.cat([self._with_onsets(prev, flag), e[:, u]], dim=-1)
                out, state = self.rnn(x[:, None], state)
                step_logits = self.out(out[:, 0])
                if gumbel is None:
                    token = torch.argmax(step_logits, dim=-1)
                else:
                    token = torch.argmax(step_logits / temperature + gumbel[:, u * S + s], dim=-1)
                logits.append(step_logits)
                tokens.append(token)
                prev = F.one_hot(token, D).to(z_dec.dtype)
        return torch.stack(tokens, dim=1), torch.stack(logits, dim=1)


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward (the adversary's gradient reversal)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return -grad


class AttributeAdversary(nn.Module):
    """An MLP (one ReLU layer) that predicts the Gaussianised danceability from z."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.bound = cfg.adversary_bound
        self.hidden = nn.Linear(cfg.head_size, cfg.adversary_hidden)
        self.output = nn.Linear(cfg.adversary_hidden, 1)

    def forward(self, z: Tensor) -> Tensor:
        out = self.output(torch.relu(self.hidden(z)))[:, 0]
        if self.bound:
            out = self.bound * torch.tanh(out / self.bound)
        return out


class RhythmDecoder(nn.Module):
    """An MLP (one tanh layer) from z's first `rhythm_code_size` dimensions to one
    note-on logit per step, [B, T]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.code_size = cfg.rhythm_code_size
        self.hidden = nn.Linear(cfg.rhythm_code_size, cfg.rhythm_hidden)
        self.output = nn.Linear(cfg.rhythm_hidden, cfg.sequence_length)

    def forward(self, z: Tensor) -> Tensor:
        return self.output(torch.tanh(self.hidden(z[:, : self.code_size])))


class MusicVAE(nn.Module):
    """Danceability-conditioned MusicVAE (conditioning none/encoder/latent/decoder)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        if cfg.wiring == "original":
            self.z_embedding = nn.Sequential(nn.Linear(cfg.z_size, cfg.head_size), nn.Tanh())
        self.decoder = Decoder(cfg)
        if cfg.adversary_hidden:
            self.adversary = AttributeAdversary(cfg)
        if cfg.rhythm_hidden:
            self.rhythm = RhythmDecoder(cfg)

    # -- input checks -------------------------------------------------------------

    @property
    def _dtype(self) -> torch.dtype:
        return self.decoder.out[0].weight.dtype

    def _check_tokens(self, tokens: object) -> Tensor:
        cfg = self.cfg
        ok = (
            isinstance(tokens, Tensor)
            and tokens.dim() == 2
            and tokens.shape[1] == cfg.sequence_length
            and not tokens.dtype.is_floating_point
            and not tokens.dtype.is_complex
            and tokens.dtype != torch.bool
        )
        if not ok:
            raise _tokens_error("tokens", cfg, tokens)
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.input_depth):
            raise ValueError(
                f"tokens must lie in [0, {cfg.input_depth}); got min {int(tokens.min())} "
                f"max {int(tokens.max())}"
            )
        return tokens.long()

    def _check_condition(self, condition: object, batch: int, needed: bool) -> Tensor | None:
        """Validate c [B] when `needed`; a condition the variant does not use is ignored."""
        if not needed:
            return None
        if condition is None:
            raise ValueError(
                f"condition is required with conditioning={self.cfg.conditioning!r}: "
                f"expected a float tensor of shape [B={batch}]"
            )
        return _check_float("condition", condition, (batch,), f"[B={batch}]").to(self._dtype)

    # -- public API ---------------------------------------------------------------

    def encode(self, tokens: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """mu, sigma [B, z_size] (for `latent` the last dim is c with fixed sigma)."""
        tokens = self._check_tokens(tokens)
        needed = self.cfg.conditioning in ("encoder", "latent")
        condition = self._check_condition(condition, tokens.shape[0], needed)
        x = F.one_hot(tokens, self.cfg.input_depth).to(self._dtype)
        return self.encoder(x, condition)

    def decoder_code(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """z [B, z_size] -> the code the decoder is fed [B, decoder_code_size]."""
        cfg = self.cfg
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != cfg.z_size:
            raise ValueError(
                f"z must be a tensor of shape [B, z_size={cfg.z_size}]; got {_describe(z)}"
            )
        condition = self._check_condition(condition, z.shape[0], cfg.conditioning == "decoder")
        h = self.z_embedding(z) if cfg.wiring == "original" else z
        if condition is not None:
            h = torch.cat([h, condition[:, None]], dim=-1)
        return h

    def forward(
        self,
        tokens: Tensor,
        condition: Tensor | None = None,
        eps: Tensor | None = None,
        sampling_probability: float = 0.0,
        choose_noise: Tensor | None = None,
        gumbel: Tensor | None = None,
        temperature: float = 1.0,
        token_keep: Tensor | None = None,
        attribute_dimension: int | None = None,
        predicted_onsets: bool = False,
        loop_gradient: bool = False,
    ) -> dict[str, Tensor]:
        """Encode, reparameterise, decode with teacher forcing or scheduled sampling.

        Teacher forcing unless `choose_noise` and `gumbel` are given, in which case
        scheduled sampling with probability `sampling_probability` (the Flax model's
        rule; `loop_gradient`: see `Decoder.scheduled`). `token_keep` [B, T] (token
        dropout, 1 keep / 0 drop) zeroes previous-token inputs.
        With an adversary, `adversary_prediction` [B] is its prediction from z without
        `attribute_dimension` (the regularised one, if any), through the gradient reversal.
        With a rhythm decoder, `rhythm_logits` [B, T] are its note-on logits from z, and
        the core reads the true note-ons or, with `predicted_onsets`, the rhythm decoder's.
        """
        cfg = self.cfg
        tokens = self._check_tokens(tokens)
        B, T, D = tokens.shape[0], cfg.sequence_length, cfg.input_depth
        if not cfg.uses_condition:
            condition = None
        mu, sigma = self.encode(tokens, condition)
        if eps is None:
            z = mu
        else:
            eps = _check_float("eps", eps, (B, cfg.z_size), f"[B={B}, z_size={cfg.z_size}]")
            z = mu + sigma * eps.to(mu.dtype)
        z_dec = self.decoder_code(z, condition)
        result = {"mu": mu, "sigma": sigma, "z": z, "z_dec": z_dec}
        if cfg.adversary_hidden:
            result["adversary_prediction"] = self.predict_attribute(z, attribute_dimension)
        onsets = None
        if cfg.rhythm_hidden:
            result["rhythm_logits"] = self.rhythm(z)
            if predicted_onsets:
                onsets = note_on_flags(result["rhythm_logits"])
            else:
                onsets = note_ons(tokens, z.dtype)
        if token_keep is not None:
            token_keep = _check_float("token_keep", token_keep, (B, T), f"[B={B}, T={T}]")
            token_keep = token_keep.to(z_dec.dtype)
        p = float(sampling_probability)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"sampling_probability must be in [0, 1]; got {p}")
        if choose_noise is None and gumbel is None:
            if p > 0.0:
                raise ValueError(
                    "choose_noise [B, T] and gumbel [B, T, D] are required when "
                    "sampling_probability > 0"
                )
            result["logits"] = self.decoder.teacher_forced(tokens, z_dec, token_keep, onsets)
            return result
        if choose_noise is None or gumbel is None:
            raise ValueError("scheduled sampling needs both choose_noise and gumbel")
        choose_noise = _check_float("choose_noise", choose_noise, (B, T), f"[B={B}, T={T}]")
        gumbel = _check_float("gumbel", gumbel, (B, T, D), f"[B={B}, T={T}, D={D}]")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        logits, sampled, fed_back = self.decoder.scheduled(
            tokens,
            z_dec,
            p,
            choose_noise,
            gumbel.to(z_dec.dtype),
            temperature,
            token_keep,
            onsets,
            loop_gradient,
        )
        result.update(logits=logits, sampled=sampled, fed_back=fed_back)
        return result

    def predict_attribute(self, z: Tensor, attribute_dimension: int | None) -> Tensor:
        """The adversary's prediction [B] from z's encoded dimensions with
        `attribute_dimension` zeroed, through the gradient reversal."""
        rest = z[:, : self.cfg.head_size]
        if attribute_dimension is not None:
            keep = torch.ones(rest.shape[1], dtype=rest.dtype, device=rest.device)
            keep[attribute_dimension] = 0.0
            rest = rest * keep
        return self.adversary(_ReverseGradient.apply(rest))

    @torch.no_grad()
    def generate(
        self,
        z: Tensor,
        condition: Tensor | None = None,
        temperature: float = 1.0,
        gumbel: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Free-running decode of z [B, z_size]: argmax, or Gumbel-max when gumbel is given
        (with a rhythm decoder, its note-ons (logit > 0) at any temperature)."""
        cfg = self.cfg
        z_dec = self.decoder_code(z, condition)
        B, T, D = z.shape[0], cfg.sequence_length, cfg.input_depth
        if gumbel is not None:
            gumbel = _check_float("gumbel", gumbel, (B, T, D), f"[B={B}, T={T}, D={D}]")
            gumbel = gumbel.to(z_dec.dtype)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        onsets = note_on_flags(self.rhythm(z)) if cfg.rhythm_hidden else None
        tokens, logits = self.decoder.generate(z_dec, temperature, gumbel, onsets)
        return {"tokens": tokens, "logits": logits}
