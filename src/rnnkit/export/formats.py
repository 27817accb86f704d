"""The model as ONNX or TorchScript, with dynamic batch size and length, checked after writing.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``). The newer ``torch.export``
exporter (``dynamo=True``) cannot keep the length dynamic for these models: tracing
``nn.LSTM``/``nn.GRU``/``nn.RNN`` decomposes the recurrence into one step per time step, which
fixes the length to the example's (``torch.export`` reports "specialized it to be a constant"),
and the ONNX program it writes then fails on any other length (the first place that shows it is
the ``expand`` of ``reverse_padded`` in a bidirectional model, measured with torch 2.13 and
onnxscript 0.7). The TorchScript-based exporter maps each cell to ONNX's own ``RNN``/``LSTM``/
``GRU`` operator, whose sequence length is an input dimension like any other.

TorchScript is written with ``torch.jit.trace``: the model has no data-dependent Python control
flow on the module path, so a trace is the whole model (``torch.jit.script`` cannot compile
rnnkit's kernel dispatch, which the module path never runs).

Both are verified after writing on batches of other sizes and lengths than the example's, so an
export that would only work for the example's shape fails here, not in production.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.errors import RnnkitError
from rnnkit.extras import require

FORMATS = ("onnx", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
ONNX_OPSET = 17
INPUTS = ("token_ids", "lengths")
OUTPUTS = ("logits", "probabilities")
TOLERANCE = 1e-5


class ExportError(RnnkitError):
    """The model could not be exported, or the exported model does not compute what it computes."""


class ProbabilityModel(nn.Module):
    """``(token_ids, lengths) -> (logits, probabilities)``: what an exported model returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(token_ids, lengths)
        return logits, logits.softmax(dim=1)


def example_batch(vocab_size: int, batch: int, steps: int, seed: int) -> tuple[Tensor, Tensor]:
    """Random right-padded ids with lengths from ``steps`` down to 1 (the first row is full)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    token_ids = torch.randint(2, max(vocab_size, 3), (batch, steps), generator=generator)
    token_ids[torch.arange(steps).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return token_ids, lengths


def write(model: nn.Module, fmt: str, path: Path) -> float:
    """Export ``model`` (module path, CPU, eval) to ``path``; return the verified max difference."""
    wrapper = ProbabilityModel(model).eval()
    vocab_size = _vocab_size(model)
    example = example_batch(vocab_size, batch=2, steps=5, seed=0)
    with warnings.catch_warnings(), torch.no_grad():
        # Deprecation notices of both exporters and tracer notes about shapes: the check below
        # is what tells whether the result is right.
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            require("onnx", "export", "rnnkit export --format onnx")
        # Python opens the file: the exporters' C++ cannot take a path that is not UTF-8.
        with path.open("wb") as handle:
            _save(wrapper, example, fmt, handle)
    return verify(wrapper, load_runner(fmt, path), vocab_size)


def _save(wrapper: ProbabilityModel, example: tuple[Tensor, Tensor], fmt: str, handle: BinaryIO) -> None:
    """Trace ``wrapper`` on ``example`` and write it into ``handle`` as ``fmt``."""
    if fmt == "onnx":
        torch.onnx.export(
            wrapper,
            example,
            handle,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={
                "token_ids": {0: "batch", 1: "length"},
                "lengths": {0: "batch"},
                "logits": {0: "batch"},
                "probabilities": {0: "batch"},
            },
        )
    else:
        torch.jit.save(torch.jit.trace(wrapper, example, check_trace=False), handle)


def load_runner(fmt: str, path: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``run(token_ids, lengths) -> probabilities`` for an exported file."""
    if fmt == "onnx":
        onnxruntime = require("onnxruntime", "export", "rnnkit export --format onnx")
        session = onnxruntime.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
        return lambda ids, lengths: session.run(["probabilities"], {"token_ids": ids, "lengths": lengths})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance mode
        with path.open("rb") as handle:
            module = torch.jit.load(handle)

    def run(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(ids), torch.from_numpy(lengths))[1].numpy()

    return run


def verify(
    wrapper: ProbabilityModel, run: Callable[[np.ndarray, np.ndarray], np.ndarray], vocab_size: int
) -> float:
    """The largest probability difference on shapes unlike the example's; raise above tolerance."""
    worst = 0.0
    for seed, (batch, steps) in enumerate([(3, 11), (1, 1), (7, 2)], start=1):
        token_ids, lengths = example_batch(vocab_size, batch, steps, seed)
        with torch.no_grad():
            expected = wrapper(token_ids, lengths)[1].numpy()
        try:
            got = run(token_ids.numpy(), lengths.numpy())
        except Exception as error:  # onnxruntime and torch.jit raise their own types
            raise ExportError(f"the exported model fails on a batch of {batch} x {steps}: {error}") from None
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > TOLERANCE:
        raise ExportError(
            f"the exported model's probabilities differ from the model's by {worst:.2e} (> {TOLERANCE}); "
            "this model does not export faithfully to this format"
        )
    return worst


def _vocab_size(model: nn.Module) -> int:
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        raise ExportError(
            f"rnnkit export needs a model with an nn.Embedding layer; {type(model).__name__} has none"
        )
    return embedding.num_embeddings
