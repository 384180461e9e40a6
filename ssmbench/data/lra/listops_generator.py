"""The ListOps generator of the Long Range Arena (Tay et al. 2021; after Nangia & Bowman 2018).

An expression is a random tree. A node at depth d < max_depth is an operator with probability
1/4, else a digit 0-9; at max_depth it is always a digit. An operator node has k ~ U{2..max_args}
children and an operator drawn uniformly from
    MIN, MAX, MED (floor of the median), SM (sum mod 10),
so its value is a digit too. The length of an expression is its number of tokens without
parentheses (a digit counts 1, an operator 2 for "[OP" and "]", plus its children). Trees are
drawn until there are n_train + n_val + n_test distinct ones with min_length < length < max_length
(published: 96000 / 2000 / 2000, depth 10, 10 arguments, lengths in (500, 2000)); the first
n_train drawn are train, the next n_val validation, the rest test.

The files are those of the release: `basic_{train,val,test}.tsv`, a header `Source<TAB>Target`,
then one expression per line with the release's binary bracketing: an operator with arguments
a_1 .. a_k is written as k + 1 opening parentheses, the operator, then each argument followed by
")", then "] )", e.g. MAX(2, 9) -> "( ( ( [MAX 2 ) 9 ) ] )". Each file is written atomically, so a
killed or concurrent generator never leaves part of one.
"""

from __future__ import annotations

import csv
import json
import random
from itertools import islice
from pathlib import Path
from typing import Iterator, Union

from ssmbench.data.lra.release import GENERATED_MARKER
from ssmbench.data.storage import atomic_path, progress

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
OPERATOR_PROBABILITY = 0.25
SPLIT_FILES = ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv")

Tree = Union[int, tuple[str, list["Tree"]]]


def random_tree(rng: random.Random, max_depth: int, max_args: int, depth: int = 1) -> tuple[Tree, int]:
    """A random expression tree and its length (tokens without parentheses)."""
    if depth >= max_depth or rng.random() >= OPERATOR_PROBABILITY:
        return rng.randrange(10), 1
    children, length = [], 2
    for _ in range(rng.randint(2, max_args)):
        child, child_length = random_tree(rng, max_depth, max_args, depth + 1)
        children.append(child)
        length += child_length
    return (rng.choice(OPERATORS), children), length


def evaluate(tree: Tree) -> int:
    """The digit an expression tree evaluates to."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    values = sorted(evaluate(c) for c in children)
    if op == "[MIN":
        return values[0]
    if op == "[MAX":
        return values[-1]
    if op == "[MED":
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
    if op == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def to_source(tree: Tree) -> str:
    """The release's text of an expression tree (see the module docstring)."""
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    parts = ["("] * (len(children) + 1) + [op]
    for child in children:
        parts += [to_source(child), ")"]
    parts += [END, ")"]
    return " ".join(parts)


def distinct_expressions(rng: random.Random, max_depth: int, max_args: int, min_length: int,
                         max_length: int) -> Iterator[tuple[str, int]]:
    """(source text, value) of random trees with min_length < length < max_length, each text once."""
    seen: set[str] = set()
    while True:
        tree, length = random_tree(rng, max_depth, max_args)
        if min_length < length < max_length:
            source = to_source(tree)
            if source not in seen:
                seen.add(source)
                yield source, evaluate(tree)


def longest_length(max_depth: int, max_args: int) -> int:
    """The length of the longest expression random_tree can draw: operators with max_args children down to
    max_depth."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def generate_listops(n_train: int = 96000, n_val: int = 2000, n_test: int = 2000, seed: int = 0, max_depth: int = 10,
                     max_args: int = 10, min_length: int = 500, max_length: int = 2000,
                     show_progress: bool = True) -> tuple[list[tuple[str, int]], ...]:
    """(train, val, test): lists of distinct (source text, value) with min_length < length < max_length."""
    if min_length + 1 >= max_length:
        raise ValueError(f"min_length={min_length} and max_length={max_length} leave no length in between")
    if max_depth < 2 or max_args < 2:
        raise ValueError(f"max_depth={max_depth} and max_args={max_args} must both be at least 2")
    longest = longest_length(max_depth, max_args)
    if longest <= min_length:
        raise ValueError(f"no expression of max_depth={max_depth} and max_args={max_args} is longer than "
                         f"min_length={min_length} (the longest has {longest} tokens)")
    total = n_train + n_val + n_test
    found = distinct_expressions(random.Random(seed), max_depth, max_args, min_length, max_length)
    drawn = islice(found, total)
    if show_progress:
        drawn = progress(drawn, "listops: generating expressions", total)
    items = list(drawn)
    return items[:n_train], items[n_train : n_train + n_val], items[n_train + n_val :]


def write_listops(out_dir: Path, splits: tuple[list[tuple[str, int]], ...], marker: dict | None = None) -> list[Path]:
    """Write basic_{train,val,test}.tsv (tab-separated, header Source, Target) into out_dir, and `marker` (if
    given) as GENERATED_MARKER (JSON). Each file goes to a temporary file that replaces its target when
    complete (`atomic_path`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in zip(SPLIT_FILES, splits):
        path = out_dir / name
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(["Source", "Target"])
            writer.writerows(rows)
        paths.append(path)
    if marker is not None:
        with atomic_path(out_dir / GENERATED_MARKER) as tmp:
            tmp.write_text(json.dumps(marker, indent=2) + "\n")
    return paths
