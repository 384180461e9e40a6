"""Datasets that turn compact cached tensors into model inputs, one example at a time.

The caches hold uint8 pixels and flat token streams (small on disk and in memory); these classes
normalize, permute and pad per example, so e.g. a new permutation or normalization never needs
a new cache.

    PixelSequences  pixels (N, L, C) uint8 -> x: (L, C) float32 = (pixels[index[i]][perm] / 255 - mean) / std, y
    TokenSequences  K documents per example, each a slice of a flat token stream [+ an EOS token]
                    -> x: (L,) int64 (K = 1) or (K, L) (K > 1), zero-padded; y; lengths () or (K,)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset


class PixelSequences(Dataset):
    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 permutation: torch.Tensor | None = None, index: torch.Tensor | None = None):
        """pixels: (N, L, C) uint8; labels: (N,) int64; mean, std: C values on the [0, 1] scale;
        permutation: (L,) index order of the pixels, or None for raster order; index: (M,) the images of
        this split (None: all), so splits share one pixel tensor instead of copying it."""
        if pixels.dtype != torch.uint8 or pixels.dim() != 3:
            raise ValueError(f"pixels must be (N, L, C) uint8, got {tuple(pixels.shape)} {pixels.dtype}")
        if len(labels) != len(pixels):
            raise ValueError(f"{len(pixels)} images but {len(labels)} labels")
        self.index = torch.arange(len(labels)) if index is None else index
        labels = labels[self.index]
        C = pixels.shape[2]
        if len(mean) != C or len(std) != C:
            raise ValueError(f"mean and std need one value per channel ({C}), got mean={list(mean)} std={list(std)}")
        self.pixels = pixels
        self.labels = labels
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.permutation = permutation

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pixels[self.index[i]]
        if self.permutation is not None:
            x = x[self.permutation]
        return (x.float() / 255.0 - self.mean) / self.std, self.labels[i]


class TokenSequences(Dataset):
    def __init__(self, documents: Sequence[tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor, seq_len: int,
                 shift: int = 0, eos: int | None = None):
        """documents: K pairs (tokens (T,) integer, offsets (N + 1,) int64): document k of example i is
        tokens[offsets[i]:offsets[i + 1]]; the token ids of x are tokens + shift (e.g. shift 1 for bytes,
        so that 0 is free for padding), followed by the token `eos` when it is given (the length counts it);
        a document with its EOS is at most seq_len long; labels: (N,) int64."""
        room = seq_len - (eos is not None)
        for tokens, offsets in documents:
            if len(offsets) != len(labels) + 1:
                raise ValueError(f"offsets of length {len(offsets)} for {len(labels)} examples")
            if len(offsets) > 1 and int((offsets[1:] - offsets[:-1]).max()) > room:
                raise ValueError(f"a document is longer than seq_len={seq_len}" + (" with its EOS" if eos is not None else ""))
        self.documents = list(documents)
        self.labels = labels
        self.seq_len = seq_len
        self.shift = shift
        self.eos = eos

    def __len__(self) -> int:
        return len(self.labels)

    def _document(self, k: int, i: int) -> tuple[torch.Tensor, int]:
        tokens, offsets = self.documents[k]
        start, end = int(offsets[i]), int(offsets[i + 1])
        n = end - start
        x = torch.zeros(self.seq_len, dtype=torch.long)
        x[:n] = tokens[start:end].long() + self.shift
        if self.eos is not None:
            x[n] = self.eos
            n += 1
        return x, n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        docs = [self._document(k, i) for k in range(len(self.documents))]
        if len(docs) == 1:
            (x, n), = docs
            return x, self.labels[i], torch.tensor(n)
        return torch.stack([x for x, _ in docs]), self.labels[i], torch.tensor([n for _, n in docs])


def ragged(sequences: Sequence[Sequence[int]] | Sequence[bytes],
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate sequences into (tokens (T,) of `dtype`, offsets (N + 1,) int64) for TokenSequences."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)
    if offsets[-1] == 0:
        flat = torch.zeros(0, dtype=dtype)
    elif dtype == torch.uint8:  # the bytes joined once into a buffer the tensor owns (no further copies)
        flat = torch.frombuffer(bytearray().join(bytes(s) for s in sequences), dtype=torch.uint8)
    else:
        flat = torch.tensor([t for s in sequences for t in s], dtype=dtype)
    return flat, offsets


def take(tokens: torch.Tensor, offsets: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The documents `index` of a ragged (tokens, offsets) pair, as a new ragged pair."""
    starts, ends = offsets[:-1][index], offsets[1:][index]
    new_offsets = torch.zeros(len(index) + 1, dtype=torch.long)
    new_offsets[1:] = torch.cumsum(ends - starts, 0)
    pieces = [tokens[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    return (torch.cat(pieces) if pieces else tokens[:0].clone()), new_offsets
