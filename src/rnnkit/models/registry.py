"""Models by name: ``@register_model("name")``, :func:`build_model`, :func:`available` and
:func:`check_model_name`.

The ``model:`` section of a config names a registered factory; the built-in ``rnn``, ``lstm`` and
``gru`` are registered the same way a user's own model is::

    @register_model("my_cnn")
    def my_cnn(cfg, *, vocab_size, num_classes, embedding_dim, embeddings, freeze_embeddings, width=64):
        return MyCNN(vocab_size, num_classes, embedding_dim, width=width)

and ``model: {name: my_cnn, options: {width: 128}}`` then builds it, once the module holding the
factory has been imported.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from torch import Tensor, nn

from rnnkit.config import ModelConfig
from rnnkit.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
"""``factory(cfg, *, vocab_size, num_classes, embedding_dim, embeddings, freeze_embeddings, **options)``."""

_BUILD_ARGUMENTS = ("vocab_size", "num_classes", "embedding_dim", "embeddings", "freeze_embeddings")
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that makes ``factory`` buildable as ``model.name: <name>``; it returns it unchanged."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def check_model_name(name: str) -> None:
    """Refuse a name no factory is registered under, suggesting the nearest one.

    :func:`build_model` checks the same way; training calls this first so that a typo fails
    before minutes of data preparation.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"model.name {name!r} is not a registered model{_suggestion(name)}")


def build_model(
    model_cfg: ModelConfig,
    *,
    vocab_size: int,
    num_classes: int,
    embeddings: Tensor | None = None,
    freeze_embeddings: bool = False,
    embedding_dim: int = 100,
) -> nn.Module:
    """The model ``model_cfg.name`` describes, with ``model_cfg.options`` as extra factory arguments.

    ``embeddings`` (``vocab_size x dim``, aligned to the vocabulary) initialise the embedding and set
    its width; without them the embedding is drawn at random with ``embedding_dim`` columns.
    """
    check_model_name(model_cfg.name)
    factory = _REGISTRY[model_cfg.name]
    reserved = sorted(set(model_cfg.options) & set(_BUILD_ARGUMENTS))
    if reserved:
        raise ConfigError(
            f"model.options.{reserved[0]} is set by rnnkit itself; remove it from model.options"
        )
    if embeddings is not None:
        embedding_dim = int(embeddings.shape[1])
    arguments = {
        "vocab_size": vocab_size,
        "num_classes": num_classes,
        "embedding_dim": embedding_dim,
        "embeddings": embeddings,
        "freeze_embeddings": freeze_embeddings,
        **model_cfg.options,
    }
    try:  # a wrong option must read as a config mistake, not as a TypeError deep in the factory
        inspect.signature(factory).bind(model_cfg, **arguments)
    except TypeError as error:
        raise ConfigError(
            f"model {model_cfg.name!r} cannot take these model.options ({error}); "
            f"see the signature of {factory.__module__}.{factory.__qualname__}"
        ) from None
    return factory(model_cfg, **arguments)


def _suggestion(name: str) -> str:
    """``"; did you mean 'lstm'?"`` plus the full list, so a typo is fixed without reading docs."""
    names = available()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} available: {', '.join(names)} (add one with @rnnkit.models.register_model)"
