"""Causal linear attention mixer (Katharopoulos et al. 2020, "Transformers are RNNs"): multi-head
attention with the softmax replaced by a feature map, run as a recurrence over a (Dk, Dv) state.

    q, k, v = c(x W_q), c(x W_k), c(x W_v)      c = short causal depthwise conv (kernel conv_size, no
                                                 activation), or the identity with use_short_conv=false
    q, k    = phi(q) Dk^-1/2, phi(k) per head    phi = feature_map: elu1 (elu(x) + 1), relu or identity
    S_t = S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t                         (ssmbench.core.linear_attention)
    normalize=true:   o_t <- o_t / (q_t^T z_t + eps),   z_t = sum_{s<=t} k_s     (the paper's Section 3.3)
    y   = RMSNorm_head(o) W_o    (use_output_norm=false: o W_o)                         (B, L, D)

Heads: H = num_heads, Dk = expand_k * D / H, Dv = expand_v * D / H. The normalizer needs q_t^T z_t > 0,
which identity features do not give (it can be zero or negative): normalize=true with
feature_map=identity is refused. relu features can give q_t^T z_t = 0, but then every q_t^T k_s is 0
and so is o_t; eps keeps 0 / 0 at 0. The per-head RMSNorm divides o_t by a positive per-head scalar, so
under it the normalizer changes the output only through the two eps: the paper's layer is
normalize=true use_output_norm=false use_short_conv=false (phi(x W_q), phi(x W_k), x W_v as in the paper).
Training runs the chunkwise form; `step()` runs the recurrence
one token at a time (state S, the key sum z when normalizing, the short convolutions' last inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.linear_attention import (linear_attention_chunkwise, linear_attention_normalizer,
                                            linear_attention_recurrent)
from ssmbench.models.short_conv import ShortConv

FEATURE_MAPS = {
    "elu1": lambda x: F.elu(x) + 1,  # Katharopoulos et al. 2020, Section 3.2.1
    "relu": F.relu,
    "identity": lambda x: x,
}
DENOMINATOR_EPS = 1e-6  # idiap/fast-transformers@fast_transformers/attention/causal_linear_attention.py (eps)


class LinearAttentionMixer(nn.Module):
    causal = True

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        feature_map: str = "elu1",
        normalize: bool = False,
        chunk_size: int = 64,
        use_short_conv: bool = True,
        conv_size: int = 4,
        use_output_norm: bool = True,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        key_dim, value_dim = int(d_model * expand_k), int(d_model * expand_v)
        if num_heads < 1 or key_dim % num_heads or value_dim % num_heads or key_dim == 0 or value_dim == 0:
            raise ValueError(
                f"linear_attention: num_heads={num_heads} must divide expand_k * d_model = {key_dim} and "
                f"expand_v * d_model = {value_dim} (both positive); change num_heads, expand_k or expand_v"
            )
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"linear_attention: feature_map={feature_map!r} is not one of {', '.join(FEATURE_MAPS)}")
        if normalize and feature_map == "identity":
            raise ValueError(
                "linear_attention: normalize=true needs positive features (q_t^T z_t > 0) and identity features "
                "can make it zero or negative; set feature_map=elu1 (or relu), or normalize=false"
            )
        if chunk_size < 1 or conv_size < 1:
            raise ValueError(f"linear_attention: chunk_size={chunk_size} and conv_size={conv_size} must be positive")
        self.num_heads, self.chunk_size, self.normalize = num_heads, chunk_size, normalize
        self.head_k, self.head_v = key_dim // num_heads, value_dim // num_heads
        self.feature_map = FEATURE_MAPS[feature_map]
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.convs = (
            nn.ModuleDict({name: ShortConv(width, conv_size, silu=False)
                           for name, width in (("q", key_dim), ("k", key_dim), ("v", value_dim))})
            if use_short_conv else None
        )
        self.o_norm = nn.RMSNorm(self.head_v, eps=norm_eps) if use_output_norm else None
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)

    def _projections(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, L, D) -> {"q", "k": (B, L, H Dk), "v": (B, L, H Dv)} before the short convolution."""
        return {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}

    def _heads(self, feats: dict[str, torch.Tensor]):
        """Split into heads, apply the feature map, scale q: -> q, k (B, H, L, Dk), v (B, H, L, Dv)."""
        B, L, _ = feats["v"].shape

        def split(t: torch.Tensor, d: int) -> torch.Tensor:
            return t.view(B, L, self.num_heads, d).transpose(1, 2)

        q = self.feature_map(split(feats["q"], self.head_k)) * self.head_k**-0.5
        k = self.feature_map(split(feats["k"], self.head_k))
        return q, k, split(feats["v"], self.head_v)

    def features(self, x: torch.Tensor):
        """The inputs of linear attention for a whole sequence: x (B, L, D) -> q, k, v (see `_heads`)."""
        feats = self._projections(x)
        if self.convs is not None:
            feats = {name: self.convs[name](t) for name, t in feats.items()}
        return self._heads(feats)

    def _output(self, o: torch.Tensor, den: torch.Tensor | None) -> torch.Tensor:
        """o (B, H, L, Dv), den (B, H, L) or None -> y (B, L, D)."""
        if den is not None:
            o = o / (den[..., None] + DENOMINATOR_EPS)
        o = o.transpose(1, 2)
        if self.o_norm is not None:
            o = self.o_norm(o)
        B, L = o.shape[:2]
        return self.o_proj(o.reshape(B, L, self.num_heads * self.head_v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), S_0 = 0 (and z_0 = 0), by the chunkwise form."""
        q, k, v = self.features(x)
        o, _ = linear_attention_chunkwise(q, k, v, chunk_size=self.chunk_size)
        den = linear_attention_normalizer(q, k)[0] if self.normalize else None
        return self._output(o, den)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """{"S": (B, H, Dk, Dv) zeros, "z": (B, H, Dk) zeros (the key sum; only with normalize), both float32
        (float64 for float64); "conv_q", "conv_k": (B, H Dk, K - 1), "conv_v": (B, H Dv, K - 1) zeros
        (the short convolutions' last inputs; absent without them)}."""
        dtype = dtype or self.o_proj.weight.dtype
        device = device or self.o_proj.weight.device
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        state = {"S": torch.zeros(batch_size, self.num_heads, self.head_k, self.head_v, device=device,
                                  dtype=state_dtype)}
        if self.normalize:
            state["z"] = torch.zeros(batch_size, self.num_heads, self.head_k, device=device, dtype=state_dtype)
        if self.convs is not None:
            for name, conv in self.convs.items():
                state[f"conv_{name}"] = conv.initial_state(batch_size, device=device, dtype=dtype)
        return state

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One token by the recurrent form: x_t (B, D), state (see `initial_state`) -> (y_t (B, D), state)."""
        feats = self._projections(x_t[:, None])
        new_state = {}
        if self.convs is not None:
            for name, t in feats.items():
                y_t, new_state[f"conv_{name}"] = self.convs[name].step(t[:, 0], state[f"conv_{name}"])
                feats[name] = y_t[:, None]
        q, k, v = self._heads(feats)
        o, new_state["S"] = linear_attention_recurrent(q, k, v, initial_state=state["S"])
        den = None
        if self.normalize:
            den, new_state["z"] = linear_attention_normalizer(q, k, initial_z=state["z"])
        return self._output(o, den)[:, 0], new_state
