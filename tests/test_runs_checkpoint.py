"""Checkpoint files: exact round trips, damage detection, a fallback copy, and no code from the file."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.errors import CheckpointError
from rnnkit.runs.checkpoint import (
    Checkpoint,
    CheckpointStore,
    capture_rng,
    load_checkpoint,
    optimizer_from_checkpoint,
    optimizer_to_checkpoint,
    restore_rng,
    save_checkpoint,
)


class Payload:
    """Unpickling this runs ``os.system``: the marker file proves whether a loader executed it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def sample(step: int = 1) -> Checkpoint:
    tensors = {"model.weight": torch.full((3, 2), float(step)), "model.flag": torch.tensor([True, False])}
    return Checkpoint(tensors, {"global_step": step, "history": [{"loss": 0.1}]})


def test_a_checkpoint_round_trips_tensors_and_metadata_exactly(tmp_path):
    path = tmp_path / "c.safetensors"
    original = sample()
    save_checkpoint(path, original)
    loaded = load_checkpoint(path)
    assert loaded.meta == original.meta
    assert loaded.section("model").keys() == {"weight", "flag"}
    assert all(torch.equal(loaded.tensors[name], t) for name, t in original.tensors.items())


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, sample())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated, corrupted"):
        load_checkpoint(path)


def test_a_flipped_bit_in_the_weights_fails_the_checksum(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, sample())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_a_pickle_with_a_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "c.safetensors"
    path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    with pytest.raises(CheckpointError, match="not an rnnkit checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_torch_save_file_is_refused_too(tmp_path):
    path = tmp_path / "c.safetensors"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_saving_last_keeps_the_previous_one_as_a_fallback(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save_last(sample(1))
    store.save_last(sample(2))
    assert load_checkpoint(store.path("previous")).meta["global_step"] == 1
    assert store.load_latest().meta["global_step"] == 2


def test_a_damaged_last_checkpoint_is_moved_aside_and_the_previous_one_is_used(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save_last(sample(1))
    store.save_last(sample(2))
    store.path("last").write_bytes(store.path("last").read_bytes()[:100])
    assert store.load_latest().meta["global_step"] == 1
    assert (tmp_path / "last.safetensors.corrupt").exists() and not store.path("last").exists()


def test_when_every_checkpoint_is_damaged_resuming_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    store.path("last").parent.mkdir(exist_ok=True)
    store.path("last").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"every checkpoint .* is damaged"):
        store.load_latest()


def test_a_folder_without_checkpoints_has_nothing_to_resume(tmp_path):
    assert CheckpointStore(tmp_path / "checkpoints").load_latest() is None


def test_leftovers_of_a_killed_write_are_cleaned_up(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save_last(sample(1))
    (tmp_path / ".last.safetensors.abc.tmp").write_bytes(b"half")
    assert store.load_latest().meta["global_step"] == 1
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_optimizer_state_survives_the_split_into_tensors_and_json(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
    flat = optimizer_to_checkpoint(optimizer.state_dict())
    save_checkpoint(tmp_path / "o.safetensors", flat)
    loaded = load_checkpoint(tmp_path / "o.safetensors")
    restored = torch.optim.AdamW(model.parameters(), lr=0.5)
    restored.load_state_dict(optimizer_from_checkpoint(loaded.tensors, loaded.meta))
    expected, actual = optimizer.state_dict(), restored.state_dict()
    assert actual["param_groups"][0]["lr"] == 0.01
    for param_id, entries in expected["state"].items():
        for key, value in entries.items():
            assert torch.equal(actual["state"][param_id][key], value)


def test_restored_random_states_repeat_the_same_draws(tmp_path):
    state = capture_rng()
    save_checkpoint(tmp_path / "r.safetensors", state)
    first = (random.random(), np.random.rand(), torch.rand(3))
    loaded = load_checkpoint(tmp_path / "r.safetensors")
    restore_rng(loaded.tensors, loaded.meta)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
