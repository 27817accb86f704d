"""The token store: documents as one flat id array plus offsets, in memory or read from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit.data.store import IDS, OFFSETS, DocumentView, TokenStore, offsets_of

DOCUMENTS = [np.array([5, 6, 7]), np.array([], dtype=np.int64), np.array([8]), np.array([9, 5, 5, 2])]


def _on_disk(tmp_path: Path) -> TokenStore:
    memory = TokenStore.from_sequences(DOCUMENTS)
    np.save(tmp_path / IDS, memory.ids)
    np.save(tmp_path / OFFSETS, memory.offsets)
    return TokenStore.open(tmp_path)


def test_a_store_gives_back_every_document_from_memory_and_from_disk(tmp_path: Path) -> None:
    for store in (TokenStore.from_sequences(DOCUMENTS), _on_disk(tmp_path)):
        assert len(store) == 4 and store.lengths.tolist() == [3, 0, 1, 4]
        assert [store.document(i).tolist() for i in range(4)] == [d.tolist() for d in DOCUMENTS]
        assert store.document(3, limit=2).tolist() == [9, 5] and store.document(3).dtype == np.int32


def test_a_file_store_stays_readable_after_its_folder_is_deleted(tmp_path: Path) -> None:
    store = _on_disk(tmp_path)
    (tmp_path / IDS).unlink()
    assert store.document(0).tolist() == [5, 6, 7]


def test_token_counts_cover_only_the_chosen_documents_whatever_the_chunk_size(tmp_path: Path) -> None:
    store = _on_disk(tmp_path)
    counts = store.token_counts(np.array([0, 3]), size=10)
    assert counts.tolist() == [0, 0, 1, 0, 0, 3, 1, 1, 0, 1]
    chunks = list(store.chunks(max_ids=2))
    assert [(first, last) for first, last, _ in chunks] == [(0, 1), (1, 3), (3, 4)]  # whole documents
    assert np.concatenate([ids for _, _, ids in chunks]).tolist() == [5, 6, 7, 8, 9, 5, 5, 2]


def test_a_document_view_is_a_lazy_truncated_list(tmp_path: Path) -> None:
    view = DocumentView(_on_disk(tmp_path), np.array([3, 0]), limit=3)
    assert len(view) == 2 and [d.tolist() for d in view] == [[9, 5, 5], [5, 6, 7]]
    assert view[1].tolist() == [5, 6, 7] and view.token_counts(10)[5] == 3  # counts are untruncated


def test_offsets_start_at_zero_and_add_up_the_lengths() -> None:
    assert offsets_of(np.array([2, 0, 3])).tolist() == [0, 2, 2, 5]
