"""DeltaNet mixer (Yang et al. 2024): multi-head linear attention updated by the delta rule.

    q, k, v = phi(conv(x W_q)), phi(conv(x W_k)), phi(conv(x W_v))    short causal depthwise conv
                                                                       (kernel conv_size), phi = SiLU
    q, k    = q / ||q||, k / ||k|| per head;  q <- q Dk^-1/2;  beta = sigmoid(x W_beta)  per head
              (beta_range [0, 2]: beta = 2 sigmoid(x W_beta), Grazzi et al. 2025, negative eigenvalues)
    S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}^T k_t))^T,   o_t = S_t^T q_t    (ssmbench.core.delta_rule)
    y   = (RMSNorm_head(o) [* SiLU(x W_g)]) W_o                              (B, L, D)

Heads: H = num_heads, Dk = expand_k * D / H, Dv = expand_v * D / H. Without the short convolution
(use_short_conv=false) phi is applied to the projections directly. Training runs the chunkwise
WY/UT form; `step()` runs the recurrence one token at a time, so generation costs O(1) per token.
The Gated DeltaNet mixer (models/gated_deltanet.py) extends this one through `_rule_chunkwise` and
`_rule_recurrent`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.delta_rule import delta_rule_chunkwise, delta_rule_reference
from ssmbench.models.short_conv import ShortConv

BETA_RANGES = (([0, 1], 1.0), ([0, 2], 2.0))  # model.mixer.beta_range -> the factor in beta = factor * sigmoid(.)


def beta_scale(beta_range, model: str) -> float:
    """The factor in beta = factor * sigmoid(.) for `model.mixer.beta_range` [0, 1] (1.0) or [0, 2] (2.0);
    ValueError for anything else."""
    values = list(beta_range) if isinstance(beta_range, Sequence) and not isinstance(beta_range, str) else None
    for allowed, scale in BETA_RANGES:
        if values == allowed and not any(isinstance(b, bool) for b in values):
            return scale
    raise ValueError(f"{model}: model.mixer.beta_range must be [0, 1] or [0, 2] (beta = sigmoid or 2 sigmoid), "
                     f"got {beta_range!r}")


class DeltaNetMixer(nn.Module):
    causal = True
    model_name = "deltanet"  # in error messages

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        chunk_size: int = 64,
        use_short_conv: bool = True,
        conv_size: int = 4,
        use_gate: bool = False,
        norm_eps: float = 1e-5,
        beta_range=(0, 1),
    ):
        super().__init__()
        name = self.model_name
        key_dim, value_dim = int(d_model * expand_k), int(d_model * expand_v)
        if num_heads < 1 or key_dim % num_heads or value_dim % num_heads or key_dim == 0 or value_dim == 0:
            raise ValueError(
                f"{name}: num_heads={num_heads} must divide expand_k * d_model = {key_dim} and "
                f"expand_v * d_model = {value_dim} (both positive); change num_heads, expand_k or expand_v"
            )
        if chunk_size < 1 or conv_size < 1:
            raise ValueError(f"{name}: chunk_size={chunk_size} and conv_size={conv_size} must be positive")
        self.beta_scale = beta_scale(beta_range, name)
        self.num_heads, self.chunk_size = num_heads, chunk_size
        self.head_k, self.head_v = key_dim // num_heads, value_dim // num_heads
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.b_proj = nn.Linear(d_model, num_heads, bias=False)
        self.convs = (
            nn.ModuleDict({"q": ShortConv(key_dim, conv_size), "k": ShortConv(key_dim, conv_size),
                           "v": ShortConv(value_dim, conv_size)})
            if use_short_conv else None
        )
        self.g_proj = nn.Linear(d_model, value_dim, bias=False) if use_gate else None
        self.o_norm = nn.RMSNorm(self.head_v, eps=norm_eps)
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)

    def _projections(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, L, D) -> {"q", "k": (B, L, H Dk), "v": (B, L, H Dv)} before the short convolution."""
        return {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}

    def _heads(self, x: torch.Tensor, feats: dict[str, torch.Tensor]):
        """Split into heads, normalize and scale: -> q, k (B, H, L, Dk), v (B, H, L, Dv), beta (B, H, L)."""
        B, L, _ = x.shape

        def split(t: torch.Tensor, d: int) -> torch.Tensor:
            return t.view(B, L, self.num_heads, d).transpose(1, 2)

        q = F.normalize(split(feats["q"], self.head_k), dim=-1) * self.head_k**-0.5
        k = F.normalize(split(feats["k"], self.head_k), dim=-1)
        v = split(feats["v"], self.head_v)
        beta = self.beta_scale * torch.sigmoid(self.b_proj(x)).transpose(1, 2)
        return q, k, v, beta

    def features(self, x: torch.Tensor):
        """The inputs of the delta rule for a whole sequence: x (B, L, D) -> q, k, v, beta (see `_heads`)."""
        feats = self._projections(x)
        if self.convs is None:
            feats = {name: F.silu(t) for name, t in feats.items()}
        else:
            feats = {name: self.convs[name](t) for name, t in feats.items()}
        return self._heads(x, feats)

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o (B, H, L, Dv), x (B, L, D) -> y (B, L, D)."""
        B, L, _ = x.shape
        o = self.o_norm(o.transpose(1, 2))
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x)).view(B, L, self.num_heads, self.head_v)
        return self.o_proj(o.reshape(B, L, self.num_heads * self.head_v))

    def _rule_chunkwise(self, x: torch.Tensor, q, k, v, beta) -> torch.Tensor:
        """The rule over a whole sequence from S_0 = 0 by the chunkwise form: -> o (B, H, L, Dv)."""
        return delta_rule_chunkwise(q, k, v, beta, chunk_size=self.chunk_size)[0]

    def _rule_recurrent(self, x: torch.Tensor, q, k, v, beta, S: torch.Tensor):
        """The rule over one token x (B, 1, D) by the recurrent form: -> (o (B, H, 1, Dv), S)."""
        return delta_rule_reference(q, k, v, beta, initial_state=S)

    def betas(self, x: torch.Tensor) -> torch.Tensor:
        """beta_t of every head: (B, L, D) -> (B, L, H). The transition I - beta k k^T (||k|| = 1) has the
        eigenvalues 1 (multiplicity Dk - 1) and 1 - beta."""
        return self.features(x)[3].transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), S_0 = 0, by the chunkwise form."""
        return self._output(self._rule_chunkwise(x, *self.features(x)), x)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"S": (B, H, Dk, Dv) zeros (float32, float64 for float64), "conv_q", "conv_k": (B, H Dk, K - 1),
        "conv_v": (B, H Dv, K - 1) zeros (the short convolutions' last inputs; absent without them)}."""
        dtype = dtype or self.o_proj.weight.dtype
        device = device or self.o_proj.weight.device
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        state = {"S": torch.zeros(batch_size, self.num_heads, self.head_k, self.head_v, device=device,
                                  dtype=state_dtype)}
        if self.convs is not None:
            for name, conv in self.convs.items():
                state[f"conv_{name}"] = conv.initial_state(batch_size, device=device, dtype=dtype)
        return state

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One token by the recurrent form: x_t (B, D), state (see `initial_state`) -> (y_t (B, D), state)."""
        x = x_t[:, None]
        feats = self._projections(x)
        new_state = {}
        for name, t in feats.items():
            if self.convs is None:
                feats[name] = F.silu(t)
            else:
                y_t, new_state[f"conv_{name}"] = self.convs[name].step(t[:, 0], state[f"conv_{name}"])
                feats[name] = y_t[:, None]
        o, new_state["S"] = self._rule_recurrent(x, *self._heads(x, feats), state["S"])
        return self._output(o, x)[:, 0], new_state
