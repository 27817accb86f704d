"""Property-based fuzzing of the text pipeline: any input gives usable data or a DataError.

The loaders read files users make with every tool there is (spreadsheets, pandas, ``jq``, shell
loops), the tokenizer and vocabulary see whatever text a caller passes to ``predict``, and
``prepare_data`` ties them to a config. These tests feed them random bytes, odd Unicode, CSV quoting
and embedded newlines, huge and empty documents and labels of every JSON type, and check that the
result keeps the pipeline's promises (ids in range, lengths within ``1..max_length``, every row
either loaded or counted) or that the failure is a one-line DataError.
"""

from __future__ import annotations

import csv
import io
import json
import random
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzing import fuzz
from hypothesis import HealthCheck, event, example, given
from hypothesis import strategies as st

from rnnkit.config import Config
from rnnkit.data.batching import BucketBatchSampler, EncodedDataset, SortedBatchSampler, collate
from rnnkit.data.corpus import TextDataset, encode_labels, load_csv, load_folder, load_jsonl, normalise_labels
from rnnkit.data.pipeline import encode_texts, prepare_data
from rnnkit.data.text import PAD, PAD_ID, UNK, UNK_ID, Tokenizer, Vocabulary
from rnnkit.errors import DataError

# Every code point, lone surrogates included (they reach predict() from os.fsdecode and JSON escapes).
any_text = st.text(st.characters(codec=None, categories=None), max_size=60)
# Text a UTF-8 file can hold, biased towards what breaks line- and quote-based formats.
AWKWARD = ['"', "'", ",", ";", "\t", "\n", "\r", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028",
           "\u2029", "\ufeff", "\ufffd", " ", "\\", "é", "İ", "ß", "ﬁ", "日本語", "\U0001f600", "e\u0301",
           "<pad>", "<unk>", "don't", "it’s", "1", "-2.5", "nan", "True", "null"]  # fmt: skip
file_text = st.lists(st.sampled_from(AWKWARD) | st.text(max_size=10), max_size=25).map("".join)
file_bytes = file_text.map(lambda text: text.encode("utf-8"))
# Labels as they come in JSON: every type, with clashes such as 1 / 1.0 / "1" / true / "True".
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["1", "1.0", "01", " 1", "True", "true", "nan", "NaN", "inf", "-0", "", " ", "\n"]),
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


def _assert_dataset(dataset: TextDataset) -> None:
    """What every loader promises, whatever the input."""
    assert isinstance(dataset, TextDataset)
    assert all(isinstance(text, str) for text in dataset.texts)
    assert len(dataset.labels) == len(dataset.texts)
    assert len(set(dataset.label_names)) == len(dataset.label_names)
    assert all(isinstance(name, str) for name in dataset.label_names)
    if dataset.labels.ndim == 2:  # multi-label: a 0/1 row per document over all label names
        assert dataset.labels.dtype == np.float32 and dataset.labels.shape[1] == len(dataset.label_names)
        assert set(np.unique(dataset.labels)) <= {0.0, 1.0}
    else:
        assert dataset.labels.dtype == np.int64
        if len(dataset):
            assert dataset.labels.min() >= 0 and dataset.labels.max() < len(dataset.label_names)
    assert all(isinstance(v, int) and v >= 0 for v in dataset.stats.values())


def _assert_one_line(error: DataError) -> None:
    message = str(error)
    assert message and len(message.splitlines()) == 1, message


def _load_or_reject(loader: Any, path: Path) -> TextDataset | None:
    try:
        dataset = loader(path)
    except DataError as error:
        event("DataError")
        _assert_one_line(error)
        return None
    event("loaded" if len(dataset) else "loaded, empty")
    _assert_dataset(dataset)
    return dataset


# ---------------------------------------------------------------------------------------- tokenizer


@fuzz(500, HealthCheck.too_slow)
@given(text=any_text | file_text, lowercase=st.booleans())
def test_the_default_tokenizer_takes_any_unicode_string_and_is_deterministic(text, lowercase):
    tokenizer = Tokenizer(lowercase=lowercase)
    tokens = tokenizer(text)
    assert tokens == tokenizer(text) == Tokenizer(lowercase=lowercase)(text)
    source = text.lower() if lowercase else text
    assert all(isinstance(token, str) and token and token in source for token in tokens)
    assert not any(char.isspace() for token in tokens for char in token)


REGEX_PIECES = [*"ab.*+?|^$()[]{}\\-,:=!<>", "(?:", "(?=", "(?<=", "(?P<n>", "(?i)", "\\b", "\\w", "\\s",
                "\\S", "\\d", "{2,}", "{4294967296}", "[^", "a-z", "\\N{", "\\u00e9", "\\1"]  # fmt: skip


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # odd but valid regexes
@fuzz(300, HealthCheck.too_slow)
@given(
    pattern=st.lists(st.sampled_from(REGEX_PIECES), max_size=12).map("".join) | st.text(max_size=8),
    text=st.text(max_size=12),
)
@example(pattern="a{4294967296}", text="a")
@example(pattern="(?:" * 2000 + "a" + ")" * 2000, text="a")
@example(pattern="a*", text="bbb")
@example(pattern="\\b", text="a b")
def test_any_token_pattern_gives_a_working_tokenizer_or_a_data_error(pattern, text):
    try:
        tokenizer = Tokenizer(pattern=pattern)
    except DataError as error:
        _assert_one_line(error)
        return
    tokens = tokenizer(text)
    assert all(isinstance(token, str) and token for token in tokens)  # empty matches are no tokens


# --------------------------------------------------------------------------------------- vocabulary

token_lists = st.lists(st.lists(any_text.filter(bool) | st.sampled_from([PAD, UNK, "a", "b"]), max_size=8))


@fuzz(200, HealthCheck.too_slow)
@given(
    docs=token_lists,
    min_freq=st.integers(1, 4),
    max_size=st.none() | st.integers(2, 12),
    texts=st.lists(any_text | file_text, max_size=5),
    pattern=st.sampled_from([None, r"\S+", r"[^\s]"]),
)
@example(docs=[["<pad>", "<pad>"]], min_freq=1, max_size=None, texts=["a <pad> <unk> b"], pattern=r"\S+")
def test_a_vocabulary_round_trips_through_its_file_and_encodes_identically(
    tmp_path, docs, min_freq, max_size, texts, pattern
):
    tokenizer = Tokenizer() if pattern is None else Tokenizer(lowercase=False, pattern=pattern)
    vocab = Vocabulary.build(docs, min_freq=min_freq, max_size=max_size, tokenizer=tokenizer)
    assert vocab.itos[:2] == [PAD, UNK] and len(set(vocab.itos)) == len(vocab)
    assert max_size is None or len(vocab) <= max_size
    counts: dict[str, int] = {}
    for doc in docs:
        for token in doc:
            counts[token] = counts.get(token, 0) + 1
    assert all(counts[token] >= min_freq for token in vocab.itos[2:])

    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    for text in texts:
        ids = vocab.encode(text)
        assert np.array_equal(loaded.encode(text), ids)
        assert ids.dtype.kind == "i" and len(ids) == len(tokenizer(text))
        # Real tokens never become padding, even the literal text "<pad>".
        assert all(UNK_ID <= i < len(vocab) for i in ids.tolist())


@fuzz(200, HealthCheck.too_slow)
@given(content=st.binary(max_size=300) | json_values.map(json.dumps))
@example(content=json.dumps({"format": "rnnkit-vocabulary/1"}))
@example(content=json.dumps({"format": "rnnkit-vocabulary/1", "itos": 5, "tokenizer": {}}))
@example(
    content=json.dumps({"format": "rnnkit-vocabulary/1", "itos": ["<pad>", "<unk>", 3], "tokenizer": []})
)
@example(content=json.dumps({"format": "rnnkit-vocabulary/1", "itos": ["<pad>", "<unk>"], "tokenizer": {}}))
@example(
    content=json.dumps({"format": "rnnkit-vocabulary/1", "itos": "<pad>", "tokenizer": {"pattern": "("}})
)
def test_a_damaged_vocabulary_file_gives_a_data_error(tmp_path, content):
    path = tmp_path / "vocab.json"
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    try:
        vocab = Vocabulary.load(path)
    except DataError as error:
        _assert_one_line(error)
        return
    assert vocab.itos[:2] == [PAD, UNK] and all(isinstance(token, str) for token in vocab.itos)
    assert isinstance(vocab.tokenizer("some text"), list)


@fuzz(200, HealthCheck.too_slow)
@given(
    texts=st.lists(any_text | file_text | st.text(max_size=3000), max_size=6),
    max_length=st.integers(1, 50),
    vocab_tokens=st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=3), max_size=20, unique=True),
)
def test_encoding_any_text_gives_ids_in_range_and_between_one_and_max_length_tokens(
    texts, max_length, vocab_tokens
):
    vocab = Vocabulary([PAD, UNK, *(t for t in vocab_tokens if t not in (PAD, UNK))])
    encoded = encode_texts(texts, vocab, max_length=max_length)
    assert len(encoded) == len(texts)
    for i, text in enumerate(texts):
        ids, label, index = encoded[i]
        assert (label, index) == (0, i)
        assert 1 <= len(ids) <= max_length
        assert ids.min() >= UNK_ID and ids.max() < len(vocab)
        expected = vocab.encode(text)[:max_length]
        assert np.array_equal(ids, expected if len(expected) else [UNK_ID])  # no tokens: one <unk>


# ------------------------------------------------------------------------------------------- labels


@fuzz(300, HealthCheck.too_slow)
@given(raw=st.lists(json_scalars | st.floats(), max_size=30), seed=st.integers())
@example(raw=["nan", "1", "2", "10", "a"], seed=0)
@example(raw=[float("nan"), 2.0, 1, "1", True, "True"], seed=3)
def test_labels_of_any_type_get_stable_ids_whatever_their_order(raw, seed):
    ids, names = encode_labels(raw)
    assert len(ids) == len(raw) and len(set(names)) == len(names) == len({str(v) for v in raw})
    assert [names[i] for i in ids] == [str(v) for v in raw]
    shuffled = list(raw)
    random.Random(seed).shuffle(shuffled)
    assert encode_labels(shuffled)[1] == names  # ids do not depend on row order (or hash seeds)
    numeric = [float(n) for n in names if _is_number(n)]
    assert numeric == sorted(numeric)  # 2 before 10


def _is_number(name: str) -> bool:
    try:
        return float(name) == float(name)  # NaN is not ordered, so it sorts with the words
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------- CSV

# Any label text but a blank one (blank labels are dropped; the bytes test covers those).
csv_labels = st.text(max_size=8).map(lambda s: s if s.strip() else f"label{s}")
csv_labels |= st.sampled_from(["1", "10", "2.5", "True", "x"])
csv_rows = st.lists(st.tuples(file_text | st.text(max_size=2000), csv_labels), max_size=12)


@fuzz(200, HealthCheck.too_slow)
@given(rows=csv_rows, quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
@example(rows=[("page one\x0cpage two", "a"), ("line\u2028sep", "b")], quoting=csv.QUOTE_MINIMAL)
@example(rows=[("x" * 200_000, "long")], quoting=csv.QUOTE_MINIMAL)
def test_csv_written_by_the_csv_module_loads_back_exactly(tmp_path, rows, quoting):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=quoting)
    writer.writerow(["label", "text", "extra"])
    writer.writerows((label, text, "") for text, label in rows)
    path = tmp_path / "data.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    dataset = load_csv(path)
    _assert_dataset(dataset)
    assert dataset.texts == [text for text, _ in rows]
    # Labels come back as normalise_labels reads them: stripped, one number written several ways once.
    assert [dataset.label_names[i] for i in dataset.labels] == normalise_labels([label for _, label in rows])
    assert dataset.stats == {"undecodable_docs": 0, "missing_label": 0}


@fuzz(300, HealthCheck.too_slow)
@given(
    content=st.binary(max_size=500) | file_bytes,
    header=st.sampled_from([b"", b"text,label\n", b"label;text\r\n", b'"text","label","text"\n']),
)
@example(content=b"text,label\n\xff\xfe broken,a\nfine,b\n", header=b"")
@example(content=b'"unclosed,a\n', header=b"text,label\n")
@example(content=b"\xef\xbb\xbftext,label\nhi,1\n", header=b"")
@example(content=b"only text\n,\n ,  \n", header=b"text,label\n")
def test_any_bytes_as_csv_load_or_give_a_data_error(tmp_path, content, header):
    path = tmp_path / "data.csv"
    path.write_bytes(header + content)
    _load_or_reject(load_csv, path)


# -------------------------------------------------------------------------------------------- JSONL


@fuzz(200, HealthCheck.too_slow)
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {"text": file_text | any_text | json_values, "label": json_values},
            optional={"other": json_values},
        ),
        max_size=12,
    ),
    ensure_ascii=st.booleans(),
    blank_lines=st.booleans(),
)
def test_jsonl_with_labels_of_any_type_loads_every_labelled_record_and_counts_the_rest(
    tmp_path, records, ensure_ascii, blank_lines
):
    lines = [json.dumps(r, ensure_ascii=ensure_ascii) for r in records]
    path = tmp_path / "data.jsonl"
    text = ("\n\n  \n" if blank_lines else "\n").join(lines)
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    dataset = _load_or_reject(load_jsonl, path)
    kept = [r for r in records if not _blank(r["label"])]
    expected = _expected_label_sets([r["label"] for r in kept])
    if expected is None:  # lists mixed with single labels, a list inside a list, or no name at all
        assert dataset is None
        return
    assert dataset is not None
    assert dataset.stats["missing_label"] == len(records) - len(kept)
    assert len(dataset) == len(kept)
    if isinstance(expected, list) and dataset.labels.ndim == 2:
        assert [_row_names(dataset, row) for row in dataset.labels] == expected
    else:
        assert [dataset.label_names[i] for i in dataset.labels] == expected
    for loaded, record in zip(dataset.texts, kept, strict=True):
        if isinstance(record["text"], str):
            assert loaded == record["text"] or "\ufffd" in loaded  # lone surrogates are replaced


@fuzz(300, HealthCheck.too_slow)
@given(content=st.binary(max_size=500) | file_bytes)
@example(content=b'{"text": "a", "label": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
@example(content=b'{"text": "a", "label": ' + b"9" * 5000 + b"}\n")
@example(content=b'{"text": "a\\ud800", "label": "\\udfff"}\n[1]\n')
@example(content=b'{"text": "a", "label": NaN}\n{"text": "b", "label": Infinity}\n')
def test_any_bytes_as_jsonl_load_or_give_a_data_error(tmp_path, content):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    _load_or_reject(load_jsonl, path)


def _blank(label: Any) -> bool:
    """No label: missing, null or only whitespace; such records are skipped and counted."""
    return label is None or (isinstance(label, str) and not label.strip())


def _expected_label_sets(labels: list[Any]) -> list[Any] | None:
    """What the loader should make of these labels: single labels as normalise_labels reads them
    when none is a list; sorted (normalised) name lists when all are lists of names (a multi-label
    file); ``None`` (a DataError) for a mix, a list holding a list, a dict or null, or lists that
    name no label at all."""
    is_list = [isinstance(label, list) for label in labels]
    if not any(is_list):
        return normalise_labels(labels)
    if not all(is_list):
        return None
    if any(isinstance(item, (list, dict)) or item is None for label in labels for item in label):
        return None
    names = iter(normalise_labels([item for label in labels for item in label]))  # items of lists too
    sets = [sorted({next(names) for _ in label} - {""}) for label in labels]
    return sets if any(sets) else None


def _row_names(dataset: TextDataset, row: np.ndarray) -> list[str]:
    return sorted(dataset.label_names[i] for i in np.flatnonzero(row))


# ------------------------------------------------------------------------------------------- folder

folder_names = st.text(
    st.characters(codec="utf-8", exclude_characters="/\\\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda name: not name.startswith(".") and len(name.encode("utf-8")) < 100)


@fuzz(100, HealthCheck.too_slow)
@given(
    classes=st.dictionaries(
        folder_names,
        st.lists(st.binary(max_size=300) | file_bytes, min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    )
)
@example(classes={"0": [b""], "\r": [b""]})  # one file in two folders: labels named as on disk
def test_a_class_folder_tree_loads_every_file_whatever_its_bytes(classes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, files in classes.items():
            (root / name).mkdir()
            for i, content in enumerate(files):
                (root / name / f"doc{i}.txt").write_bytes(content)
        dataset = load_folder(root)
    _assert_dataset(dataset)
    assert sorted(dataset.label_names) == sorted(classes)
    # The same file name with the same bytes in several class folders is one document with all
    # those labels; the data is then multi-label.
    documents: dict[tuple[int, bytes], set[str]] = {}
    for name, files in classes.items():
        for i, content in enumerate(files):
            documents.setdefault((i, content), set()).add(name)
    assert len(dataset) == len(documents)
    if any(len(names) > 1 for names in documents.values()):
        loaded = sorted(_row_names(dataset, row) for row in dataset.labels)
        assert loaded == sorted(sorted(names) for names in documents.values())
    else:
        assert dataset.labels.ndim == 1
    undecodable = 0
    for _, content in documents:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            undecodable += 1
    assert dataset.stats["undecodable_docs"] == undecodable


# ------------------------------------------------------------------------------------ prepare_data


@fuzz(60, HealthCheck.too_slow)
@given(
    rows=st.lists(st.tuples(file_text, st.sampled_from(["a", "b", "c", "7"])), max_size=30),
    kind=st.sampled_from(["csv", "jsonl"]),
    max_length=st.integers(1, 20),
    min_freq=st.integers(1, 3),
    max_vocab=st.none() | st.integers(2, 20),
    val_size=st.sampled_from([0.0, 0.1, 0.5, 0.99]),
    test_size=st.sampled_from([0.0, 0.2, 0.9, 0.99]),
    split=st.sampled_from(["bydate", "random"]),
    seed=st.integers(0, 2**32 - 1),
    lowercase=st.booleans(),
)
def test_prepare_data_on_small_odd_corpora_gives_valid_splits_or_a_data_error(
    monkeypatch, rows, kind, max_length, min_freq, max_vocab, val_size, test_size, split, seed, lowercase
):
    monkeypatch.delenv("RNNKIT_CACHE", raising=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data.{kind}"
        if kind == "csv":
            buffer = io.StringIO(newline="")
            csv.writer(buffer).writerows([("text", "label"), *rows])
            path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        else:
            path.write_text(
                "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8"
            )
        cfg = Config()
        data = cfg.data
        data.dataset, data.path, data.cache_dir = kind, str(path), str(Path(tmp) / "cache")
        data.max_length, data.min_freq, data.max_vocab = max_length, min_freq, max_vocab
        data.lowercase, data.val_size, data.test_size, data.split = lowercase, val_size, test_size, split
        cfg.embeddings.dim, cfg.train.seed = 4, seed
        try:
            prepared = prepare_data(cfg)
        except DataError as error:
            event("DataError")
            _assert_one_line(error)
            return
    event("prepared")
    assert len(prepared.train) >= 1
    assert prepared.embeddings is None or tuple(prepared.embeddings.shape) == (len(prepared.vocab), 4)
    for part in (prepared.train, prepared.validation, prepared.test):
        assert all(1 <= len(seq) <= max_length for seq in part.sequences)
        assert all(seq.min() >= 0 and seq.max() < len(prepared.vocab) for seq in part.sequences)
        assert len(part) == 0 or part.labels.max() < len(prepared.label_names)
    assert len(prepared.train) + len(prepared.validation) + len(prepared.test) <= len(rows)


# ----------------------------------------------------------------------------------------- batching


@fuzz(200, HealthCheck.too_slow)
@given(
    lengths=st.lists(st.integers(1, 30), max_size=80),
    batch_size=st.integers(1, 9),
    num_replicas=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 5),
)
def test_batches_cover_every_document_once_per_epoch_on_every_rank_layout(
    lengths, batch_size, num_replicas, seed, epoch
):
    if 0 < len(lengths) < num_replicas:
        with pytest.raises(ValueError):
            BucketBatchSampler(lengths, batch_size, num_replicas=num_replicas)
        return
    dataset = EncodedDataset([np.full(n, 2) for n in lengths], np.zeros(len(lengths)), max_length=30)
    for make in (
        lambda rank: BucketBatchSampler(lengths, batch_size, seed=seed, num_replicas=num_replicas, rank=rank),
        lambda rank: SortedBatchSampler(lengths, batch_size, num_replicas=num_replicas, rank=rank),
    ):
        seen: list[int] = []
        counts = set()
        for rank in range(num_replicas):
            sampler = make(rank)
            if isinstance(sampler, BucketBatchSampler):
                sampler.set_epoch(epoch)
            batches = list(sampler)
            counts.add(len(batches))
            assert len(batches) == len(sampler)
            for batch in batches:
                assert batch
                seen += batch
                padded = collate([dataset[i] for i in batch])
                assert tuple(padded.token_ids.shape) == (len(batch), max(lengths[i] for i in batch))
                assert padded.lengths.tolist() == [lengths[i] for i in batch]
                assert int((padded.token_ids != PAD_ID).sum()) == sum(lengths[i] for i in batch)
        assert sorted(seen) == list(range(len(lengths)))
        assert len(counts) == 1  # every rank runs the same number of steps


def test_a_csv_document_larger_than_the_csv_modules_field_limit_still_loads(tmp_path):
    path = tmp_path / "big.csv"
    huge = "word " * 100_000  # 500 KB; the csv module refuses fields over 128 KiB by default
    path.write_text(f'text,label\n"{huge}",big\nsmall,small\n', encoding="utf-8")
    limit = csv.field_size_limit()
    assert load_csv(path).texts == [huge, "small"]
    assert csv.field_size_limit() == limit  # the module-wide setting is left as it was
