"""LRA ListOps: the published generator (checked by an independent evaluator) and the TSV loader."""

import csv
import random
from collections import Counter

import pytest
import torch

from ssmbench.data.lra.listops import VOCAB, ListOpsDataModule
from ssmbench.data.lra.listops_generator import generate_listops, random_tree, write_listops
from ssmbench.data.lra.release import GENERATED_MARKER
from ssmbench.errors import TaskDataError
from tests.helpers import ready
from tests.task_fixtures import LISTOPS_SIZES, listops_text, listops_value
from tests.task_fixtures import write_listops as write_listops_fixture



def floor_median(args: list[int]) -> int:
    a, k = sorted(args), len(args) // 2
    return a[k] if len(a) % 2 else (a[k - 1] + a[k]) // 2


OPS = {"[MIN": min, "[MAX": max, "[MED": floor_median, "[SM": lambda a: sum(a) % 10}


def evaluate_text(source: str) -> tuple[int, int, int, int]:
    """(value, length without parentheses, deepest operator nesting, most arguments of an operator) of a
    release-format expression, by a stack machine over its tokens (independent of the generator)."""
    stack, value, depth, widest = [], None, 0, 0
    tokens = [t for t in source.split() if t not in "()"]
    for t in tokens:
        if t in OPS:
            stack.append((t, []))
            depth = max(depth, len(stack))
        elif t == "]":
            op, args = stack.pop()
            widest = max(widest, len(args))
            result = OPS[op](args)
            if stack:
                stack[-1][1].append(result)
            else:
                value = result
        elif stack:
            stack[-1][1].append(int(t))
        else:
            value = int(t)
    assert not stack and source.count("(") == source.count(")")
    return value, len(tokens), depth, widest


def test_generated_expressions_evaluate_to_their_labels_within_the_limits():
    train, val, test = generate_listops(60, 10, 10, seed=3, max_depth=4, max_args=5, min_length=10, max_length=120,
                                        show_progress=False)
    assert (len(train), len(val), len(test)) == (60, 10, 10)
    sources = [s for s, _ in train + val + test]
    assert len(set(sources)) == 80  # unique examples
    for source, label in train + val + test:
        value, length, depth, widest = evaluate_text(source)
        assert value == label and 10 < length < 120
        assert depth <= 3 and 2 <= widest <= 5  # operators only above max_depth, 2..max_args arguments


def test_tree_shape_follows_the_published_generator():
    """Below max_depth a node is an operator with probability 1/4, uniform over the four operators, with
    2..max_args arguments (uniform); at max_depth it is a digit (root at depth 1)."""
    rng = random.Random(0)
    n = 4000
    operators = [t for t in (random_tree(rng, max_depth=2, max_args=6)[0] for _ in range(n)) if not isinstance(t, int)]
    assert abs(len(operators) / n - 0.25) < 0.03
    assert all(isinstance(c, int) for _, children in operators for c in children)
    arity = Counter(len(children) for _, children in operators)
    assert sorted(arity) == [2, 3, 4, 5, 6] and all(abs(c / len(operators) - 1 / 5) < 0.06 for c in arity.values())
    kinds = Counter(op for op, _ in operators)
    assert sorted(kinds) == sorted(OPS) and all(abs(c / len(operators) - 1 / 4) < 0.06 for c in kinds.values())

    deep = [random_tree(rng, max_depth=3, max_args=3)[0] for _ in range(2000)]
    nested = [c for t in deep if not isinstance(t, int) for c in t[1] if not isinstance(c, int)]
    assert nested and all(isinstance(g, int) for _, children in nested for g in children)


def test_published_settings_give_lengths_between_500_and_2000():
    train, _, _ = generate_listops(15, 0, 0, seed=0, show_progress=False)
    for source, label in train:
        value, length, depth, widest = evaluate_text(source)
        assert value == label and 500 < length < 2000 and depth <= 9 and widest <= 10


def test_same_seed_same_files(tmp_path):
    def files(seed, name):
        splits = generate_listops(20, 4, 4, seed=seed, min_length=5, max_length=80, show_progress=False)
        return [p.read_bytes() for p in write_listops(tmp_path / name, splits)]

    assert files(7, "a") == files(7, "b")
    assert files(7, "a") != files(8, "c")
    with open(tmp_path / "a" / "basic_val.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["Source", "Target"] and len(rows) == 5 and all(r[1] in "0123456789" for r in rows[1:])


def test_text_format_matches_the_release_bracketing():
    assert listops_text(["[MAX", 2, 9]) == "( ( ( [MAX 2 ) 9 ) ] )"
    train, _, _ = generate_listops(5, 0, 0, seed=1, min_length=3, max_length=8, show_progress=False)
    for source, _ in train:
        assert source.startswith("( ( ") and source.endswith(" ] )")


def listops_task(data_dir, **kw):
    args = dict(name="listops", vocab_size=16, n_classes=10, seq_len=256, data_dir=data_dir, batch_size=3)
    args.update(kw)
    return ready(ListOpsDataModule(**args))


def test_loader_tokens_padding_lengths_and_splits(tmp_path):
    written = write_listops_fixture(tmp_path)
    dm = listops_task(tmp_path)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == tuple(LISTOPS_SIZES.values())
    for ds, name in ((dm.train_set, "basic_train.tsv"), (dm.test_set, "basic_test.tsv")):
        for i, expr in enumerate(written[name]):
            x, y, n = ds[i]
            tokens = [t for t in listops_text(expr).split() if t not in "()"]
            assert x.dtype == torch.long and x.shape == (256,) and int(n) == len(tokens)
            assert [VOCAB[t] for t in x[:n].tolist()] == tokens
            assert (x[n:] == 0).all() and (x[:n] > 0).all() and int(y) == listops_value(expr)
    x, y, lengths = next(iter(dm.train_dataloader()))
    assert x.shape == (3, 256) and y.shape == (3,) and lengths.shape == (3,)
    assert len(VOCAB) == 16 and VOCAB[0] == "<pad>"


def test_generated_files_load_in_the_release_locations(tmp_path):
    splits = generate_listops(12, 3, 3, seed=2, min_length=5, max_length=50, show_progress=False)
    write_listops(tmp_path / "lra_release" / "lra_release" / "listops-1000", splits)  # the archive's nesting
    dm = listops_task(tmp_path)
    assert [int(dm.val_set[i][1]) for i in range(3)] == [label for _, label in splits[1]]
    custom = listops_task(tmp_path, root="lra_release/lra_release")
    assert len(custom.train_set) == 12


def test_the_extracted_release_is_read_before_files_generated_earlier(tmp_path):
    written = write_listops_fixture(tmp_path)  # stands for the release: move it where the archive puts it
    (tmp_path / "lra_release" / "lra_release").mkdir()
    (tmp_path / "lra_release" / "listops-1000").rename(tmp_path / "lra_release" / "lra_release" / "listops-1000")
    splits = generate_listops(12, 3, 3, seed=2, min_length=5, max_length=50, show_progress=False)
    generated = tmp_path / "lra_release" / "listops-1000"  # where `ssmbench data generate listops` writes
    write_listops(generated, splits)
    (generated / GENERATED_MARKER).write_text("{}")
    dm = listops_task(tmp_path)
    assert len(dm.train_set) == LISTOPS_SIZES["basic_train.tsv"]
    assert [int(y) for _, y, _ in dm.val_set] == [listops_value(e) for e in written["basic_val.tsv"]]
    assert dm.data_status().source == "LRA release"
    assert len(listops_task(tmp_path, root="lra_release").train_set) == 12  # the generated files, on request


def test_malformed_files_name_the_file_and_line(tmp_path):
    write_listops_fixture(tmp_path)
    path = tmp_path / "lra_release" / "listops-1000" / "basic_val.tsv"
    good = path.read_text()
    lines = good.splitlines()
    cases = [
        ("\n".join(["Src\tTgt"] + lines[1:]), "first line is \\['Src', 'Tgt'\\]"),
        ("\n".join(lines[:3] + [lines[3].split("\t")[0][:40]]), "line 4 has 1 fields"),
        ("\n".join(lines[:2] + [lines[2].replace("[MIN", "[FIRST").replace("[MAX", "[FIRST")]), "line 3: unknown token"),
        ("\n".join(lines[:2] + [lines[2].split("\t")[0] + "\t12"]), "line 3: Target '12' is not a digit"),
        ("\n".join(lines[:2] + [lines[2].replace(" ] )", " )", 1) + ""]), "line 3: unbalanced expression"),
        (lines[0] + "\n", "holds no expressions after its header"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(TaskDataError, match=f"{path}: {message}"):
            listops_task(tmp_path)


def test_expressions_longer_than_seq_len_are_an_error_not_truncated(tmp_path):
    written = write_listops_fixture(tmp_path)
    with pytest.raises(TaskDataError, match="more than task.seq_len=4; raise task.seq_len"):
        listops_task(tmp_path, seq_len=4)
    lengths = [len([t for t in listops_text(e).split() if t not in "()"]) for e in written["basic_train.tsv"]]
    longest = max(lengths)
    dm = listops_task(tmp_path, seq_len=longest)  # the longest expression fills the sequence exactly
    x, _, n = dm.train_set[lengths.index(longest)]
    assert int(n) == longest == x.shape[0] and bool((x > 0).all())
    with pytest.raises(TaskDataError, match=f"holds an expression of {longest} tokens, more than task.seq_len"):
        listops_task(tmp_path, seq_len=longest - 1)


def test_append_eos_ends_each_expression_with_token_16_and_must_fit(tmp_path):
    written = write_listops_fixture(tmp_path)
    dm = listops_task(tmp_path, append_eos=True, vocab_size=17)
    for i, expr in enumerate(written["basic_val.tsv"]):
        x, _, n = dm.val_set[i]
        tokens = [t for t in listops_text(expr).split() if t not in "()"]
        assert int(n) == len(tokens) + 1 and [VOCAB[t] for t in x[: n - 1].tolist()] == tokens
        assert int(x[n - 1]) == 16 and (x[n:] == 0).all()
    lengths = [len([t for t in listops_text(e).split() if t not in "()"]) for e in written["basic_train.tsv"]]
    longest = max(lengths)
    x, _, n = listops_task(tmp_path, append_eos=True, vocab_size=17, seq_len=longest + 1).train_set[lengths.index(longest)]
    assert int(n) == longest + 1 == x.shape[0] and int(x[-1]) == 16     # the EOS fills the last position
    with pytest.raises(TaskDataError, match=f"an expression of {longest + 1} tokens with its EOS, more than task.seq_len"):
        listops_task(tmp_path, append_eos=True, vocab_size=17, seq_len=longest)
    with pytest.raises(ValueError, match="ListOps with EOS has vocab_size=17"):
        listops_task(tmp_path, append_eos=True)


def test_missing_files_name_the_release_and_the_generator(tmp_path):
    with pytest.raises(TaskDataError) as e:
        listops_task(tmp_path)
    message = str(e.value)
    assert f"{tmp_path}/lra_release/listops-1000/basic_{{train,val,test}}.tsv" in message
    assert f"{tmp_path}/lra_release/lra_release/listops-1000" in message
    assert "lra_release.gz" in message and f"ssmbench data generate listops --data-dir {tmp_path}" in message


def test_undecodable_and_binary_files_name_the_file(tmp_path):
    """Random bytes, bytes that are not UTF-8 after valid lines, and a binary "line" longer than csv reads: one
    TaskDataError naming the file, never a UnicodeDecodeError or csv.Error."""
    write_listops_fixture(tmp_path)
    path = tmp_path / "lra_release" / "listops-1000" / "basic_val.tsv"
    lines = path.read_bytes().splitlines(keepends=True)
    cases = [
        (random.Random(0).randbytes(5000), "is not UTF-8 text \\(invalid (start|continuation) byte; 0 lines read"),
        (b"".join(lines[:4]) + b"\xff\xfe\x00\x01" * 3000, "is not UTF-8 text \\(invalid start byte; "),
        (lines[0] + b"\x00" * 200_000 + b"\t1\r\n", "line 2 is not a TSV row \\(field larger than field limit"),
    ]
    for data, message in cases:
        path.write_bytes(data)
        with pytest.raises(TaskDataError, match=f"^{path}: {message}.*; delete it and fetch or generate it again$"):
            listops_task(tmp_path)


def test_writing_replaces_each_file_atomically(tmp_path):
    """A writer that dies while writing a file leaves the previous file whole and no temporary file behind."""
    first = generate_listops(6, 3, 3, seed=1, min_length=5, max_length=40, show_progress=False)
    paths = write_listops(tmp_path, first)
    before = [p.read_bytes() for p in paths]

    def dies_after_one_row():
        yield generate_listops(1, 0, 0, seed=2, min_length=5, max_length=40, show_progress=False)[0][0]
        raise OSError(28, "No space left on device")

    second = generate_listops(6, 0, 0, seed=2, min_length=5, max_length=40, show_progress=False)[0]
    with pytest.raises(OSError, match="No space left"):
        write_listops(tmp_path, (second, dies_after_one_row(), []))
    assert paths[0].read_bytes() != before[0]  # the train file was complete, so it was replaced
    assert [p.read_bytes() for p in paths[1:]] == before[1:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
