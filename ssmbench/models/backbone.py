"""The backbone every model shares: encoder -> residual blocks -> pool -> decoder.

    x: (B, L) tokens or (B, L, d_input) reals
    -> encoder (Embedding or Linear) [+ positional encoding]          (B, L, D)
    -> n_layers x block: prenorm  u = u + drop(mixer(norm(u)))  [+ u = u + drop(ff(norm(u)))]
                         postnorm u = norm(u + drop(mixer(u)))  [+ u = norm(u + drop(ff(u)))]
    -> final norm (prenorm only)
    -> pool: target "sequence": mean or last valid position        (B, D)
             target "token": no pooling                            (B, L, D)
    -> decoder: linear  W f                                       (B, C) or (B, L, C)
                mlp     W2 gelu(W1 f), W1: F -> D                 (the S4 release's Retrieval head)

Paired tasks (x: (B, 2, L[, d_input])) encode both documents with the same blocks and classify
f = [a, b, a - b, a * b] of the pooled features (Tay et al. 2021), so F = 4D (else F = D).
The mixer is a factory (a Hydra partial) called as `mixer(d_model=D)` once per layer (twice when
bidirectional: the second reads the time-reversed sequence and the two outputs are summed).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.models.dropout import SequenceDropout

NORMS = ("layer", "batch", "rms")
FEEDFORWARDS = ("none", "mlp", "glu", "swiglu", "geglu")
POOLS = ("mean", "last")
POSITIONALS = ("none", "sinusoidal", "learned")
DECODERS = ("linear", "mlp")


def _choice(name: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"model.{name}={value!r} is not one of {list(options)}")
    return value


class SequenceNorm(nn.Module):
    """LayerNorm, BatchNorm (statistics over batch and time) or RMSNorm over the channels of (B, L, D)."""

    def __init__(self, kind: str, d_model: int):
        super().__init__()
        self.kind = _choice("norm", kind, NORMS)
        if kind == "layer":
            self.norm = nn.LayerNorm(d_model)
        elif kind == "batch":
            self.norm = nn.BatchNorm1d(d_model)
        else:
            self.norm = nn.RMSNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class GatedActivation(nn.Module):
    """(..., 2F) -> (..., F): act(a) * b for [a, b] = h split in halves along the last dimension;
    act = silu (SwiGLU) or the tanh-approximated gelu (GeGLU, Griffin's MLP)."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.act = act

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a, b = h.chunk(2, dim=-1)
        return self.act(a) * b


class FeedForward(nn.Module):
    """Position-wise, hidden width F = expand * D:
    mlp: W2 gelu(W1 x);  glu: W2 (W1a x * sigmoid(W1b x));  swiglu: W2 (silu(W1a x) * W1b x);
    geglu: W2 (gelu_tanh(W1a x) * W1b x)."""

    def __init__(self, kind: str, d_model: int, expand: int, dropout: float, tie_dropout: bool = False):
        super().__init__()
        gated = kind in ("glu", "swiglu", "geglu")
        hidden = expand * d_model
        self.inp = nn.Linear(d_model, 2 * hidden if gated else hidden)
        self.act = {"mlp": nn.GELU(), "glu": nn.GLU(dim=-1), "swiglu": GatedActivation(F.silu),
                    "geglu": GatedActivation(partial(F.gelu, approximate="tanh"))}[kind]
        self.drop = SequenceDropout(dropout, tie_dropout)
        self.out = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.act(self.inp(x))))


class Bidirectional(nn.Module):
    """y = f(x) + flip(g(flip(x))): a forward mixer plus a second one on the time-reversed input."""

    def __init__(self, factory: Callable[..., nn.Module], d_model: int):
        super().__init__()
        self.fwd = factory(d_model=d_model)
        self.bwd = factory(d_model=d_model)
        self.causal = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fwd(x) + self.bwd(x.flip(1)).flip(1)


class ResidualBlock(nn.Module):
    def __init__(self, mixer: nn.Module, d_model: int, norm: str, prenorm: bool, dropout: float, ff: str, ff_expand: int,
                 tie_dropout: bool = False):
        super().__init__()
        self.mixer = mixer
        self.prenorm = prenorm
        self.norm = SequenceNorm(norm, d_model)
        self.drop = SequenceDropout(dropout, tie_dropout)
        self.ff = None if ff == "none" else FeedForward(ff, d_model, ff_expand, dropout, tie_dropout)
        self.ff_norm = None if self.ff is None else SequenceNorm(norm, d_model)

    def _residual(self, u: torch.Tensor, f: nn.Module, norm: nn.Module) -> torch.Tensor:
        if self.prenorm:
            return u + self.drop(f(norm(u)))
        return norm(u + self.drop(f(u)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = self._residual(u, self.mixer, self.norm)
        if self.ff is not None:
            u = self._residual(u, self.ff, self.ff_norm)
        return u


def sinusoidal_encoding(length: int, d_model: int) -> torch.Tensor:
    """PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)); shape (L, D)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
    return pe


class SequenceModel(nn.Module):
    def __init__(
        self,
        *,
        name: str,
        mixer: Callable[..., nn.Module],
        n_classes: int,
        d_input: int | None = None,
        vocab_size: int | None = None,
        target: str = "sequence",
        paired: bool = False,
        max_len: int | None = None,
        d_model: int = 128,
        n_layers: int = 4,
        prenorm: bool = True,
        norm: str = "layer",
        dropout: float = 0.1,
        tie_dropout: bool = False,
        ff: str = "none",
        ff_expand: int = 2,
        pool: str = "mean",
        bidirectional: bool = False,
        positional: str = "none",
        decoder: str = "linear",
    ):
        super().__init__()
        if (d_input is None) == (vocab_size is None):
            raise ValueError(f"model {name}: the task must declare exactly one of d_input or vocab_size")
        _choice("ff", ff, FEEDFORWARDS)
        self.name = name
        self.target = target
        self.paired = paired
        self.pool = _choice("pool", pool, POOLS)
        self.bidirectional = bidirectional
        self.encoder = nn.Embedding(vocab_size, d_model) if vocab_size is not None else nn.Linear(d_input, d_model)
        self.positional = _choice("positional", positional, POSITIONALS)
        if positional != "none" and max_len is None:
            raise ValueError(f"model {name}: positional={positional} needs max_len (the task's seq_len)")
        if positional == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_encoding(max_len, d_model), persistent=False)
        elif positional == "learned":
            self.pos_table = nn.Parameter(0.02 * torch.randn(max_len, d_model))
        self.blocks = nn.ModuleList(
            ResidualBlock(
                Bidirectional(mixer, d_model) if bidirectional else mixer(d_model=d_model),
                d_model, norm, prenorm, dropout, ff, ff_expand, tie_dropout,
            )
            for _ in range(n_layers)
        )
        self.final_norm = SequenceNorm(norm, d_model) if prenorm else nn.Identity()
        features = 4 * d_model if paired else d_model
        if _choice("decoder", decoder, DECODERS) == "linear":
            self.decoder = nn.Linear(features, n_classes)
        else:
            self.decoder = nn.Sequential(nn.Linear(features, d_model), nn.GELU(), nn.Linear(d_model, n_classes))

    @property
    def causal(self) -> bool:
        """True if the output at position t depends only on inputs at positions <= t."""
        return all(getattr(block.mixer, "causal", False) for block in self.blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder and blocks: (B, L) or (B, L, d_input) -> (B, L, D)."""
        u = self.encoder(x)
        if self.positional != "none":
            u = u + self.pos_table[: u.shape[1]].to(u.dtype)
        for block in self.blocks:
            u = block(u)
        return self.final_norm(u)

    def pooled(self, u: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """(B, L, D) -> (B, D): mean over the valid positions, or the last valid position."""
        B, L, _ = u.shape
        if lengths is None:
            lengths = torch.full((B,), L, device=u.device, dtype=torch.long)
        if self.pool == "last":
            return u[torch.arange(B, device=u.device), lengths.clamp(min=1) - 1]
        mask = torch.arange(L, device=u.device)[None, :] < lengths[:, None]
        return (u * mask[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(u.dtype)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits: (B, C) for sequence targets, (B, L, C) for token targets."""
        if self.paired:
            u = self.pooled(self.features(x.flatten(0, 1)), None if lengths is None else lengths.flatten())
            a, b = u[0::2], u[1::2]
            return self.decoder(torch.cat([a, b, a - b, a * b], dim=-1))
        u = self.features(x)
        if self.target == "token":
            return self.decoder(u)
        return self.decoder(self.pooled(u, lengths))
