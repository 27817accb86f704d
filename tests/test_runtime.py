"""The process: one device resolution, and configure_runtime's settings applied inside a block and
put back after it."""

from __future__ import annotations

import os
import re
import sys

import pytest
import torch

from rnnkit.config import TrainConfig
from rnnkit.errors import ConfigError, RnnkitError
from rnnkit.inference import autocast
from rnnkit.runtime import (
    amp_dtype,
    configure_runtime,
    cpu_flags,
    cpu_has_native_bfloat16,
    denormals_flushed,
    resolve_device,
    reuse_large_allocations,
)


@pytest.fixture(autouse=True)
def restore_torch_settings(monkeypatch):
    """Every test leaves the process-wide torch switches as it found them (conftest: denormals)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # records the original value for teardown
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn


def test_auto_resolves_to_cuda_only_when_it_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cpu_is_always_available():
    assert resolve_device(TrainConfig(device="cpu").device) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_asking_for_missing_cuda_is_a_one_line_user_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = re.escape(f"train.device={name} but CUDA is not available")
    with pytest.raises(RnnkitError, match=message) as error:
        resolve_device(TrainConfig(device=name).device)
    assert "\n" not in str(error.value)


def test_asking_for_a_cuda_index_that_does_not_exist_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RnnkitError, match="only 1 CUDA device"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_anything_else_is_a_config_error():
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("tpu")


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_follows_the_config(flush):
    with configure_runtime(TrainConfig(device="cpu", flush_denormal=flush)):
        assert denormals_flushed() is flush
        assert (torch.tensor(1e-40).mul(1.0).item() == 0.0) is flush


@pytest.mark.parametrize("flush", [True, False])
def test_the_denormal_setting_is_read_as_torch_sets_it_also_when_toggled_directly(flush):
    torch.set_flush_denormal(flush)  # conftest puts the default back
    assert denormals_flushed() is flush
    assert (torch.tensor(1e-40).mul(1.0).item() == 0.0) is flush


def test_num_threads_is_set_only_when_positive():
    torch.set_num_threads(2)
    with configure_runtime(TrainConfig(device="cpu", num_threads=0)):
        assert torch.get_num_threads() == 2
    with configure_runtime(TrainConfig(device="cpu", num_threads=1)):
        assert torch.get_num_threads() == 1


def test_deterministic_mode_switches_on_every_determinism_setting():
    with configure_runtime(TrainConfig(device="cpu", deterministic=True)):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_default_mode_lets_cudnn_pick_the_fastest_algorithms():
    with configure_runtime(TrainConfig(device="cpu", deterministic=False)):
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


@pytest.mark.parametrize("reuse", [True, False])
def test_reuse_memory_follows_the_config(monkeypatch, reuse):
    calls = []
    monkeypatch.setattr("rnnkit.runtime.reuse_large_allocations", lambda enabled: calls.append(enabled))
    with configure_runtime(TrainConfig(device="cpu", reuse_memory=reuse)):
        pass
    assert calls == ([True] if reuse else [])


def test_the_block_puts_back_every_setting_the_caller_had():
    torch.set_flush_denormal(False)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True, warn_only=True)  # a notebook user's own choice
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, False
    cfg = TrainConfig(device="cpu", flush_denormal=True, num_threads=1, deterministic=False)
    with configure_runtime(cfg):
        assert denormals_flushed() and torch.get_num_threads() == 1
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert not denormals_flushed() and torch.get_num_threads() == 2
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    with configure_runtime(TrainConfig(device="cpu", deterministic=True)):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_the_settings_are_put_back_when_the_block_fails():
    torch.set_flush_denormal(False)
    with pytest.raises(KeyboardInterrupt), configure_runtime(TrainConfig(device="cpu", flush_denormal=True)):
        assert denormals_flushed()
        raise KeyboardInterrupt
    assert not denormals_flushed()


def test_the_run_says_that_the_malloc_setting_outlives_it(monkeypatch, caplog):
    monkeypatch.setattr("rnnkit.runtime.reuse_large_allocations", lambda enabled: True)
    with caplog.at_level("INFO", logger="rnnkit.runtime"), configure_runtime(TrainConfig(device="cpu")):
        pass
    assert any("cannot undo" in record.getMessage() for record in caplog.records)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc malloc setting")
def test_large_allocations_can_be_kept_for_reuse_and_given_back():
    try:
        assert reuse_large_allocations(True)
        torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)  # larger than glibc's mmap threshold
    finally:
        assert reuse_large_allocations(False)  # glibc's defaults again for the other tests


@pytest.mark.parametrize("native", [True, False])
def test_mixed_precision_is_bfloat16_on_cpus_that_have_it_and_float16_on_cuda(monkeypatch, native):
    monkeypatch.setattr("rnnkit.runtime.cpu_has_native_bfloat16", lambda: native)
    assert amp_dtype(torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert amp_dtype(torch.device("cuda")) == torch.float16


@pytest.mark.parametrize(("native", "enabled"), [(True, True), (True, False), (False, True)])
def test_train_amp_autocasts_the_cpu_only_where_bfloat16_is_native(monkeypatch, native, enabled):
    monkeypatch.setattr("rnnkit.runtime.cpu_has_native_bfloat16", lambda: native)
    with autocast(torch.device("cpu"), enabled):
        assert torch.is_autocast_enabled("cpu") is (native and enabled)
        assert torch.nn.Linear(3, 2)(torch.randn(1, 3)).dtype == (
            torch.bfloat16 if native and enabled else torch.float32
        )


def test_native_bfloat16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    real_open = open
    monkeypatch.setattr(
        "builtins.open", lambda path, *a, **k: real_open(flags if path == "/proc/cpuinfo" else path, *a, **k)
    )
    cpu_flags.cache_clear()  # read once per process: make this test's reads the ones that count
    try:
        assert cpu_has_native_bfloat16()
        flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
        cpu_flags.cache_clear()
        assert not cpu_has_native_bfloat16()
    finally:
        cpu_flags.cache_clear()  # the real CPU's flags for the other tests
