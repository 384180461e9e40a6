"""Byte-level LRA Text (IMDB parquet) and Retrieval (AAN pairs TSV) on fixtures in their real formats."""

from collections import Counter

import pytest
import torch

from ssmbench.data.lra.retrieval import RetrievalDataModule
from ssmbench.data.lra.text import TextDataModule
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import cache_files
from ssmbench.errors import TaskDataError
from tests.helpers import ready
from tests.task_fixtures import AAN_SIZES, IMDB_SIZES, write_aan, write_imdb


def text_task(data_dir, **kw):
    args = dict(name="text", vocab_size=257, n_classes=2, seq_len=4096, data_dir=data_dir, download=False,
                batch_size=4)
    args.update(kw)
    return ready(TextDataModule(**args))


def retrieval_task(data_dir, **kw):
    args = dict(name="retrieval", vocab_size=257, n_classes=2, seq_len=4000, paired=True, data_dir=data_dir,
                batch_size=4)
    args.update(kw)
    return ready(RetrievalDataModule(**args))


def expected_tokens(text: str, seq_len: int) -> tuple[list[int], int]:
    data = text.encode("utf-8")[:seq_len]
    return [b + 1 for b in data] + [0] * (seq_len - len(data)), len(data)


def test_text_is_bytes_plus_one_truncated_to_seq_len_with_lengths(tmp_path):
    written = write_imdb(tmp_path)
    dm = text_task(tmp_path)
    n_train = IMDB_SIZES["train"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (n_train - 3, 3, IMDB_SIZES["test"])
    texts, labels = written["test"]
    assert max(len(t.encode()) for t in texts) > 4096  # the fixture has reviews to truncate
    for i, text in enumerate(texts):
        x, y, n = dm.test_set[i]
        tokens, length = expected_tokens(text, 4096)
        assert x.dtype == torch.long and x.tolist() == tokens and int(n) == length and int(y) == labels[i]
    train_texts, train_labels = written["train"]
    _, val_idx = split_indices(n_train, (0.1,), 42)
    x, y, n = dm.val_set[1]
    assert x.tolist() == expected_tokens(train_texts[val_idx[1]], 4096)[0] and int(y) == train_labels[val_idx[1]]
    x, y, lengths = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 4096) and lengths.shape == (4,) and int(x.max()) < 257


def test_text_val_fraction_zero_validates_on_test_and_seq_len_keys_the_cache(tmp_path):
    write_imdb(tmp_path)
    dm = text_task(tmp_path, val_fraction=0)
    assert len(dm.train_set) == IMDB_SIZES["train"] and dm.val_set is dm.test_set
    short = text_task(tmp_path, seq_len=100)
    assert short.test_set[0][0].shape == (100,) and int(short.test_set[0][2]) <= 100
    assert len(cache_files(tmp_path, "imdb")) == 2
    with pytest.raises(ValueError, match="byte tokens need vocab_size=257, the config says 256"):
        text_task(tmp_path, vocab_size=256)
    with pytest.raises(ValueError, match="byte tokens and EOS need vocab_size=258"):
        text_task(tmp_path, append_eos=True)


def test_text_append_eos_ends_each_review_with_token_257(tmp_path):
    written = write_imdb(tmp_path)
    dm = text_task(tmp_path, val_fraction=0, append_eos=True, vocab_size=258, seq_len=500)
    texts, _ = written["test"]
    for i, text in enumerate(texts):
        x, _, n = dm.test_set[i]
        data = text.encode("utf-8")[:499]                     # cut to seq_len - 1: the EOS always fits
        assert x[: len(data)].tolist() == [b + 1 for b in data] and int(x[len(data)]) == 257
        assert int(n) == len(data) + 1 and x[len(data) + 1:].eq(0).all()
    assert any(int(dm.test_set[i][2]) == 500 for i in range(len(texts)))


def character_vocabulary(train_texts, cut, min_freq):
    """The release's vocabulary, written out: characters of the cut train reviews by count, ties by code point."""
    counts = Counter(ch for text in train_texts for ch in text[:cut])
    return sorted((ch for ch, c in counts.items() if c >= min_freq), key=lambda ch: (-counts[ch], ord(ch)))


@pytest.mark.parametrize("append_eos", [False, True])
def test_text_chars_tokenizer_builds_the_vocabulary_from_train(tmp_path, append_eos):
    written = write_imdb(tmp_path)
    seq_len = 300
    cut = seq_len - append_eos
    min_freq = sum(text[:cut].count("é") for text in written["train"][0]) + 1   # "é" falls below it
    chars = character_vocabulary(written["train"][0], cut, min_freq)
    first = 3 if append_eos else 2                      # <pad> 0, <unk> 1 [, <eos> 2]
    rare = {ch for text in written["train"][0] for ch in text[:cut]} - set(chars)
    assert "é" in rare and "t" in chars
    dm = text_task(tmp_path, val_fraction=0, tokenizer="chars", min_freq=min_freq, append_eos=append_eos,
                   vocab_size=first + len(chars), seq_len=seq_len)
    ids = {ch: first + i for i, ch in enumerate(chars)}
    for i, text in enumerate(written["test"][0]):
        x, _, n = dm.test_set[i]
        expect = [ids.get(ch, 1) for ch in text[:cut]] + ([2] if append_eos else [])
        assert int(n) == len(expect) and x[: len(expect)].tolist() == expect and x[len(expect):].eq(0).all()
    with pytest.raises(ValueError, match=f"has {first + len(chars)} tokens; set task.vocab_size={first + len(chars)}"):
        text_task(tmp_path, tokenizer="chars", min_freq=min_freq, append_eos=append_eos,
                  vocab_size=first + len(chars) - 1, seq_len=seq_len)


def test_text_chars_with_a_larger_vocab_size_warns_and_bad_options_fail(tmp_path, caplog):
    write_imdb(tmp_path)
    dm = text_task(tmp_path, tokenizer="chars", vocab_size=1000, seq_len=200)
    assert "leaves" in caplog.text and "unused" in caplog.text and int(dm.train_set[0][0].max()) < 1000
    with pytest.raises(ValueError, match="tokenizer='words' is not one of"):
        text_task(tmp_path, tokenizer="words")
    with pytest.raises(ValueError, match="min_freq=0 must be at least 1"):
        text_task(tmp_path, tokenizer="chars", min_freq=0)


def test_text_split_without_reviews_is_an_error_naming_the_directory(tmp_path):
    import pyarrow.parquet as pq

    write_imdb(tmp_path)
    test_file = next((tmp_path / "imdb").rglob("test-*.parquet"))
    pq.write_table(pq.read_table(test_file).slice(0, 0), test_file)
    with pytest.raises(TaskDataError, match=f"{tmp_path / 'imdb'}: the test split has no reviews"):
        text_task(tmp_path)


def test_retrieval_pairs_two_byte_documents_per_example(tmp_path):
    written = write_aan(tmp_path)
    dm = retrieval_task(tmp_path)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == tuple(AAN_SIZES.values())
    for ds, name in ((dm.train_set, "new_aan_pairs.train.tsv"), (dm.val_set, "new_aan_pairs.eval.tsv")):
        for i, (label, text1, text2) in enumerate(written[name]):
            x, y, n = ds[i]
            (t1, n1), (t2, n2) = expected_tokens(text1, 4000), expected_tokens(text2, 4000)
            assert x.shape == (2, 4000) and x[0].tolist() == t1 and x[1].tolist() == t2
            assert n.tolist() == [n1, n2] and int(y) == label
    assert int(dm.train_set[0][2][0]) == 4000  # the long first document is cut to seq_len
    x, y, lengths = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 2, 4000) and y.shape == (4,) and lengths.shape == (4, 2)


def test_retrieval_seq_len_keys_the_cache(tmp_path):
    write_aan(tmp_path)
    short = retrieval_task(tmp_path, seq_len=100)
    assert int(short.train_set[0][2][0]) == 100
    full = retrieval_task(tmp_path)  # a cache of documents cut at 100 bytes must not be served for 4000
    assert int(full.train_set[0][2][0]) == 4000 and len(cache_files(tmp_path, "aan")) == 2


def test_retrieval_append_eos_ends_both_documents_with_token_257(tmp_path):
    written = write_aan(tmp_path)
    dm = retrieval_task(tmp_path, append_eos=True, vocab_size=258)
    for i, (label, text1, text2) in enumerate(written["new_aan_pairs.test.tsv"]):
        x, y, n = dm.test_set[i]
        for k, text in enumerate((text1, text2)):
            data = text.encode("utf-8")[:3999]
            assert x[k, : len(data)].tolist() == [b + 1 for b in data] and int(x[k, len(data)]) == 257
            assert int(n[k]) == len(data) + 1
    assert int(dm.train_set[0][2][0]) == 4000 and int(dm.train_set[0][0][0, 3999]) == 257  # cut to 3999 + EOS
    with pytest.raises(ValueError, match="retrieval with EOS has vocab_size=258"):
        retrieval_task(tmp_path, append_eos=True)


def test_retrieval_malformed_and_missing_files(tmp_path):
    with pytest.raises(TaskDataError) as e:
        retrieval_task(tmp_path)
    assert f"{tmp_path}/lra_release/tsv_data/new_aan_pairs.{{train,eval,test}}.tsv" in str(e.value)
    assert "lra_release.gz" in str(e.value)

    write_aan(tmp_path)
    path = tmp_path / "lra_release" / "tsv_data" / "new_aan_pairs.test.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["1.0\tA\tB\tonly one document"]) + "\n")
    with pytest.raises(TaskDataError, match=f"{path}: line 3 has 4 tab-separated fields, expected 5"):
        retrieval_task(tmp_path)
    path.write_text("\n".join(lines[:1] + ["2\tA\tB\tx\ty"]) + "\n")
    with pytest.raises(TaskDataError, match=f"{path}: line 2: label b'2' is not 0 or 1"):
        retrieval_task(tmp_path)
