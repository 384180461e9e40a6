"""Character vocabularies built from a training split, the tokenization of the S4 release's LRA Text loader.

A text is the sequence of its Unicode characters (code points), cut to its first `max_chars`. The
vocabulary is built from the cut training texts:

    ids   0 <pad>, 1 <unk>, 2 <eos> (only when EOS is appended), then every character seen at least
          min_freq times, most frequent first (ties: smaller code point first)

and a character outside it (rarer in train, or unseen) becomes <unk>. Texts are stored as one flat
int32 stream of token ids with offsets (`sequences.ragged` layout), so a split of 25,000 reviews is
encoded by array operations, not per character in Python.
"""

from __future__ import annotations

import numpy as np
import torch

PAD, UNK, EOS = 0, 1, 2


def specials(eos: bool) -> int:
    """The number of special ids before the characters: <pad>, <unk> [, <eos>]."""
    return 3 if eos else 2


def code_points(texts: list[str], max_chars: int) -> tuple[np.ndarray, torch.Tensor]:
    """(code points (T,) uint32 of the texts cut to max_chars, joined; offsets (N + 1,) int64)."""
    cut = [t[:max_chars] for t in texts]
    offsets = torch.zeros(len(cut) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.tensor([len(t) for t in cut], dtype=torch.long), 0)
    return np.frombuffer("".join(cut).encode("utf-32-le"), dtype=np.uint32), offsets


def build_vocabulary(train_points: np.ndarray, min_freq: int) -> torch.Tensor:
    """The vocabulary's characters as code points (V,) int64, in id order (see module docstring)."""
    chars, counts = np.unique(train_points, return_counts=True)   # sorted by code point
    keep = counts >= min_freq
    chars, counts = chars[keep], counts[keep]
    order = np.argsort(-counts, kind="stable")                    # by count, ties keep code point order
    return torch.from_numpy(chars[order].astype(np.int64))


def encode(points: np.ndarray, vocabulary: torch.Tensor, eos: bool) -> torch.Tensor:
    """Code points (T,) -> token ids (T,) int32: the vocabulary's id of each character, <unk> for the rest."""
    chars = vocabulary.numpy()
    first = specials(eos)
    ids = np.full(len(points), UNK, dtype=np.int32)
    if len(chars):
        order = np.argsort(chars)
        sorted_chars = chars[order]
        at = np.clip(np.searchsorted(sorted_chars, points), 0, len(chars) - 1)
        known = sorted_chars[at] == points
        ids[known] = order[at[known]].astype(np.int32) + first
    return torch.from_numpy(ids)
