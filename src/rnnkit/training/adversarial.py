"""Adversarial training on the word embeddings (``train.adversarial_epsilon``): FGM, as in Miyato,
Dai & Goodfellow, "Adversarial training methods for semi-supervised text classification" (2017).

Each step learns from a batch twice: as it is, and with every document's embedded tokens moved a
distance epsilon (the L2 norm over the whole document) in the direction that raises its loss most
to first order, the gradient the first pass has just computed. The network learns to give the same
answer for inputs near the ones it saw, a regulariser that no choice of training words can be. It
costs a second forward and backward pass per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rnnkit.config import TrainConfig
from rnnkit.errors import ConfigError

__all__ = ["EmbeddingAdversary", "check_adversarial"]


def check_adversarial(cfg: TrainConfig, model: nn.Module) -> None:
    """What ``train.adversarial_epsilon`` needs, said before a run folder is made."""
    if not cfg.adversarial_epsilon:
        return
    if cfg.compile:
        raise ConfigError(
            "train.adversarial_epsilon changes the model's hooks between its two passes, and rnnkit does not "
            "run that under torch.compile; set train.compile=false or train.adversarial_epsilon=0"
        )
    _embedder(model)


def _embedder(model: nn.Module) -> nn.Module:
    embedder = getattr(model, "embedder", None)
    if not isinstance(embedder, nn.Module):
        raise ConfigError(
            "train.adversarial_epsilon perturbs the output of the model's `embedder` module, and "
            f"{type(model).__name__} has none; set train.adversarial_epsilon=0"
        )
    return embedder


class EmbeddingAdversary:
    """Watches a model's ``embedder`` output during the first pass and perturbs it in the second.

    The hooks live only inside :meth:`watch` and :meth:`perturbed`: outside them (evaluation, a
    saved or exported model) the model is untouched.
    """

    def __init__(self, model: nn.Module, epsilon: float) -> None:
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.embedder = _embedder(model)
        self.epsilon = epsilon
        self._embedded: Tensor | None = None

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Keep the gradient of the embedder's output in the forward pass run inside."""

        def keep(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            if not output.requires_grad:  # frozen vectors: the perturbation still needs a gradient
                output = output.detach().requires_grad_()
            output.retain_grad()
            self._embedded = output
            return output

        handle = self.embedder.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def perturbed(self) -> Iterator[None]:
        """Add :meth:`perturbation` to the embedder's output in the forward pass run inside; call
        after the backward pass of the loss computed under :meth:`watch`."""
        delta = self.perturbation()
        self._embedded = None  # the watched pass's tensors are not needed any more
        handle = self.embedder.register_forward_hook(lambda module, inputs, output: output + delta)
        try:
            yield
        finally:
            handle.remove()

    def perturbation(self) -> Tensor:
        """epsilon x the watched gradient, normalised per document: ``(batch, time, dim)``."""
        if self._embedded is None or self._embedded.grad is None:
            raise RuntimeError("no gradient of the embeddings: run forward under watch(), then backward")
        gradient = self._embedded.grad.detach().float()
        norm = torch.linalg.vector_norm(gradient.flatten(1), dim=1).clamp_min(1e-12)
        delta = self.epsilon * gradient / norm.view(-1, *([1] * (gradient.dim() - 1)))
        return delta.to(self._embedded.dtype)
