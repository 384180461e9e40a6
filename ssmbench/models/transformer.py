"""Multi-head softmax self-attention mixer (the Transformer baseline).

    Q, K, V = x W_q, x W_k, x W_v split into H heads of size D/H     (B, H, L, D/H)
    y = concat_h softmax(Q_h K_h^T / sqrt(D/H) [+ causal mask]) V_h  W_o   (B, L, D)

computed by `torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels
where available). Positional information comes from the backbone (`positional: sinusoidal`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionMixer(nn.Module):
    def __init__(self, d_model: int, num_heads: int = 4, causal: bool = False, attn_dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"transformer: d_model={d_model} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.causal = causal
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(B, L, D))
