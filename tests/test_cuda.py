"""CUDA: the same models and runs on a GPU. Skipped where torch sees no GPU (CI never has one);
``scripts/gpu_check.sh`` runs them on a lent GPU machine.

Tolerances: cuDNN's recurrent kernels sum in another order than the CPU's, so GPU and CPU logits
agree within 1e-4 (float32, TF32 off), and padding within test_models_classifier's 1e-5 as on the CPU.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_models_classifier import assert_padding_never_changes_logits, padded_batch, small
from test_models_encoders import assert_weight_drop_is_dropconnect
from test_trainer import LEARNS_THE_TOPICS, train_tiny_run

from rnnkit import load
from rnnkit.models import GRUClassifier, LSTMClassifier, RNNClassifier
from rnnkit.models.pooling import POOLINGS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CLASSES = [RNNClassifier, LSTMClassifier, GRUClassifier]
CPU_ATOL = 1e-4


@pytest.fixture(autouse=True)
def no_tf32():
    """TF32 products would put the GPU 1e-3 away from the CPU; the tolerances assume float32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.cell)
def test_a_model_gives_the_same_logits_and_gradients_on_the_gpu_as_on_the_cpu(cls, bidirectional):
    cpu = small(cls, bidirectional=bidirectional)
    gpu = small(cls, bidirectional=bidirectional).cuda()
    ids, lengths = padded_batch([3, 9, 1, 6], extra_padding=2)
    cpu_logits = cpu(ids, lengths)
    gpu_logits = gpu(ids.cuda(), lengths.cuda())
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, atol=CPU_ATOL, rtol=0)
    cpu_logits.sum().backward()
    gpu_logits.sum().backward()
    for (name, cpu_param), gpu_param in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(gpu_param.grad.cpu(), cpu_param.grad, atol=CPU_ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.cell)
def test_padding_never_changes_logits_on_the_gpu(cls, pooling):
    assert_padding_never_changes_logits(small(cls, bidirectional=True, pooling=pooling).cuda(), seed=3)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_weight_drop_is_dropconnect_on_the_gpu_too(cell):
    assert_weight_drop_is_dropconnect(cell, "auto", "cuda")  # cuDNN reads the dropped weights


@pytest.mark.parametrize("update", ["dense", "rows"], ids=["dense-embedding-update", "row-embedding-update"])
@pytest.mark.parametrize("amp", [False, True], ids=["float32", "float16"])
def test_a_run_trained_on_the_gpu_opens_and_predicts_on_the_cpu(tmp_path, amp, update):
    gpu = {"train.device": "cuda", "train.amp": amp, "train.embedding_update": update}
    run = train_tiny_run(tmp_path, **LEARNS_THE_TOPICS, **gpu)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda")
    assert metrics["test"]["accuracy"] > 0.8  # as on the CPU (test_trainer)
    on_cpu, on_gpu = load(run, device="cpu"), load(run, device="cuda")
    texts = ["orbit rocket launch the moon", "puck goal in the playoff season"]
    assert on_cpu.predict(texts) == on_gpu.predict(texts)
    assert load(run, device="cuda", amp=True).predict(texts) == on_cpu.predict(texts)  # float16 products
