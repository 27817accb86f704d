"""``train.init_from``: start a new run from a trained run's weights (new data, or a new config).

Parameters are copied by name. The embedding is copied row by row for the tokens both
vocabularies hold (the new run builds its own vocabulary from its own data; tokens new to it keep
their fresh initialisation: pretrained vectors where the config names some, random otherwise).
The head (``head.*``) is kept only when the label list is the same, in the same order; otherwise
the new run starts a new head. Any other parameter whose shape differs (another hidden size,
cell, depth or embedding width) is a one-line error naming it.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from rnnkit.data import Vocabulary
from rnnkit.errors import ConfigError
from rnnkit.runs import open_run

logger = logging.getLogger(__name__)

EMBEDDING = "embedder.embedding.weight"
HEAD = "head."


def warm_start(
    model: nn.Module, source_dir: str | os.PathLike[str], vocab: Vocabulary, label_names: list[str]
) -> None:
    """Load ``source_dir``'s best weights into ``model`` where they fit (see the module docstring)."""
    source = open_run(source_dir)
    theirs = source.model.state_dict()
    ours = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    same_labels = source.label_names == list(label_names)
    copied = 0
    for name, tensor in ours.items():
        if name not in theirs:
            continue
        if name.startswith(HEAD) and not same_labels:
            continue
        if name == EMBEDDING and tensor.shape[1:] == theirs[name].shape[1:]:
            shared = _shared_rows(vocab, source.vocab)
            tensor[shared[:, 0]] = theirs[name][shared[:, 1]].to(tensor.dtype)
            logger.info("init from %s: %d of %d vocabulary rows copied", source_dir, len(shared), len(vocab))
            copied += 1
            continue
        if tensor.shape != theirs[name].shape:
            raise ConfigError(
                f"train.init_from {source_dir}: {name} has shape {tuple(theirs[name].shape)} there and "
                f"{tuple(tensor.shape)} here; use that run's model settings and embedding width"
            )
        tensor.copy_(theirs[name])
        copied += 1
    model.load_state_dict(ours)
    head = "kept" if same_labels else "new (the label list differs)"
    logger.info("init from %s: %d of %d tensors copied; head %s", source_dir, copied, len(ours), head)


def _shared_rows(vocab: Vocabulary, source: Vocabulary) -> torch.Tensor:
    """``(n, 2)`` pairs of (row here, row there) for every token both vocabularies hold."""
    pairs = [(i, source.stoi[token]) for i, token in enumerate(vocab.itos) if token in source.stoi]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
