"""Tokenizers for any language: ``data.tokenizer`` names one, and the vocabulary saves it with the run.

* ``regex`` (default): every match of ``data.token_pattern`` (words, numbers, punctuation);
* ``whitespace``: what ``str.split()`` gives;
* ``char``: one token per character (whitespace skipped), plus the longer character n-grams
  starting there up to ``data.char_ngrams``: Chinese, Japanese, Thai, any text without spaces;
* ``jieba``: Chinese word segmentation (``pip install 'rnnkit[chinese]'``);
* a path to a Hugging Face ``tokenizers`` ``.json`` file (``pip install 'rnnkit[hf]'``): its tokens
  (subwords) become rnnkit's vocabulary, and the file's content is saved inside the run;
* a name registered with :func:`register_tokenizer`: your own ``text -> list of tokens`` function.

Every tokenizer lowercases first when ``data.lowercase`` is true and never yields empty tokens.
:meth:`to_dict` / :func:`tokenizer_from_dict` is how the run folder's ``vocab.json`` holds it, so
predict, evaluate, explain (and anything else that opens a run) split text exactly as training did.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rnnkit.config import DEFAULT_TOKEN_PATTERN, DataConfig
from rnnkit.data.regex_safety import check_token_pattern
from rnnkit.errors import DataError
from rnnkit.extras import require

__all__ = [
    "BUILT_IN",
    "CharTokenizer",
    "HuggingFaceTokenizer",
    "JiebaTokenizer",
    "RegexTokenizer",
    "RegisteredTokenizer",
    "TextTokenizer",
    "WhitespaceTokenizer",
    "build_tokenizer",
    "names_a_file",
    "register_tokenizer",
    "registered_tokenizers",
    "tokenizer_from_dict",
]

BUILT_IN = ("regex", "whitespace", "char", "jieba")
_REGISTRY: dict[str, Callable[[str], list[str]]] = {}


class TextTokenizer(Protocol):
    """What rnnkit needs of a tokenizer: text to tokens, and a JSON form that rebuilds it."""

    kind: ClassVar[str]
    lowercase: bool

    def __call__(self, text: str) -> list[str]: ...

    def to_dict(self) -> dict[str, Any]: ...

    def cache_identity(self) -> Any:
        """What the tokenised corpus cache must key on besides the config (a file's content...)."""


class _Base:
    kind: ClassVar[str]
    lowercase: bool

    def _prepare(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lowercase": self.lowercase}

    def cache_identity(self) -> Any:
        return None


@dataclass(frozen=True)
class RegexTokenizer(_Base):
    """Lowercase (optionally), then keep every match of a regex: one token per match."""

    kind: ClassVar[str] = "regex"
    lowercase: bool = True
    pattern: str = DEFAULT_TOKEN_PATTERN
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            regex = re.compile(self.pattern)
        except (re.error, OverflowError, RecursionError) as error:  # a{99999999999}, deep nesting
            raise DataError(f"data.token_pattern {self.pattern!r} is not a valid regex: {error}") from None
        if regex.groups:
            # findall would return the groups instead of whole tokens.
            raise DataError("data.token_pattern must not contain capturing groups; use (?:...) instead")
        check_token_pattern(self.pattern)  # also when a run's vocab.json names the pattern
        object.__setattr__(self, "_regex", regex)

    def __call__(self, text: str) -> list[str]:
        # filter: a pattern that can match nothing (``a*``, ``\b``) must not yield empty tokens.
        return list(filter(None, self._regex.findall(self._prepare(text))))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "pattern": self.pattern}


@dataclass(frozen=True)
class WhitespaceTokenizer(_Base):
    """Tokens are the runs of non-whitespace characters (``str.split()``), punctuation attached."""

    kind: ClassVar[str] = "whitespace"
    lowercase: bool = True

    def __call__(self, text: str) -> list[str]:
        return self._prepare(text).split()


@dataclass(frozen=True)
class CharTokenizer(_Base):
    """One token per non-whitespace character; with ``ngrams`` = n, each character is followed by the
    2..n-character grams that start at it (``今天天气`` with 2: 今 今天 天 天天 天 天气 气).

    N-grams give a recurrent model word-like units for languages written without spaces, at the
    cost of longer sequences (about n times) and a larger vocabulary.
    """

    kind: ClassVar[str] = "char"
    lowercase: bool = True
    ngrams: int = 1

    def __post_init__(self) -> None:
        if self.ngrams < 1:
            raise DataError(f"data.char_ngrams must be at least 1, got {self.ngrams}")

    def __call__(self, text: str) -> list[str]:
        chars = [c for c in self._prepare(text) if not c.isspace()]
        if self.ngrams == 1:
            return chars
        return [
            "".join(chars[start : start + size])
            for start in range(len(chars))
            for size in range(1, min(self.ngrams, len(chars) - start) + 1)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "ngrams": self.ngrams}


@dataclass(frozen=True)
class JiebaTokenizer(_Base):
    """Chinese words from jieba's default dictionary (precise mode); whitespace tokens dropped."""

    kind: ClassVar[str] = "jieba"
    lowercase: bool = True

    def __call__(self, text: str) -> list[str]:
        return [token for token in _jieba().lcut(self._prepare(text)) if token.strip()]

    def cache_identity(self) -> Any:
        return {"jieba": _jieba().__version__}


def _jieba() -> Any:
    jieba = require("jieba", "chinese", "data.tokenizer: jieba")
    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict..." on every run
    return jieba


@dataclass(frozen=True)
class HuggingFaceTokenizer(_Base):
    """The tokens (not ids) of a Hugging Face ``tokenizers`` file; ``json`` is the file's content, so a
    run needs no copy of the file. Special tokens ([CLS], <s>...) are not added."""

    kind: ClassVar[str] = "huggingface"
    json: str
    lowercase: bool = True
    source: str = ""
    _tokenizer: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokenizers = require("tokenizers", "hf", "data.tokenizer: a Hugging Face tokenizers file")
        try:
            tokenizer = tokenizers.Tokenizer.from_str(self.json)
        except Exception as error:  # tokenizers raises plain Exception for any parse failure
            raise DataError(
                f"data.tokenizer {self.source or 'file'} is not a Hugging Face tokenizers file ({error}); "
                "give the .json that tokenizer.save(path) writes"
            ) from None
        object.__setattr__(self, "_tokenizer", tokenizer)

    @classmethod
    def from_file(cls, path: str | Path, lowercase: bool = True) -> HuggingFaceTokenizer:
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataError(
                f"data.tokenizer {path} does not exist; give the path of a Hugging Face tokenizers .json "
                "file (what tokenizer.save(path) writes), or regex, whitespace, char or jieba"
            )
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"data.tokenizer {path} cannot be read as a tokenizers file: {error}") from None
        return cls(json=text, lowercase=lowercase, source=str(path))

    def __call__(self, text: str) -> list[str]:
        tokens = self._tokenizer.encode(self._prepare(text), add_special_tokens=False).tokens
        return [token for token in tokens if token]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "source": self.source, "json": self.json}

    def cache_identity(self) -> Any:
        return {"sha256": hashlib.sha256(self.json.encode("utf-8")).hexdigest()}


@dataclass(frozen=True)
class RegisteredTokenizer(_Base):
    """A function registered with :func:`register_tokenizer`, found again by name when a run is read."""

    kind: ClassVar[str] = "registered"
    name: str
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.name not in _REGISTRY:
            raise DataError(
                f"tokenizer {self.name!r} is not registered; import the module that registers it with "
                "@rnnkit.data.register_tokenizer first (on the command line: --include-package MODULE)"
            )

    def __call__(self, text: str) -> list[str]:
        tokens = _REGISTRY[self.name](self._prepare(text))
        if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
            raise DataError(
                f"tokenizer {self.name!r} must return a list of strings, got {type(tokens).__name__}"
            )
        return [token for token in tokens if token]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "name": self.name}

    def cache_identity(self) -> Any:
        function = _REGISTRY[self.name]
        return {"function": f"{function.__module__}.{function.__qualname__}"}


def register_tokenizer(name: str) -> Callable[[Callable[[str], list[str]]], Callable[[str], list[str]]]:
    """Decorator: ``data.tokenizer: <name>`` then splits text with the decorated function.

    The function takes one (already lowercased, if ``data.lowercase``) text and returns its tokens.
    A run saves only the name, so the module that registers it must be imported wherever the run is
    used (``--include-package MODULE`` on the command line). The tokenised corpus is cached under
    the function's name: give it a new name when you change what it returns.
    """

    def decorator(function: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
        if name in BUILT_IN or name.endswith(".json"):
            raise ValueError(f"{name!r} cannot be registered: it names a built-in tokenizer or a file")
        if name in _REGISTRY and _REGISTRY[name] is not function:
            raise ValueError(f"a tokenizer named {name!r} is already registered")
        _REGISTRY[name] = function
        return function

    return decorator


def registered_tokenizers() -> list[str]:
    return sorted(_REGISTRY)


def names_a_file(name: str) -> bool:
    """Whether ``data.tokenizer`` is read as the path of a tokenizers file rather than a name."""
    return (
        name not in BUILT_IN
        and name not in _REGISTRY
        and (name.endswith(".json") or Path(name).expanduser().exists())
    )


def build_tokenizer(data: DataConfig) -> TextTokenizer:
    """The tokenizer ``data.tokenizer`` names, with ``data.lowercase`` (and the kind's own settings)."""
    name, lowercase = data.tokenizer, data.lowercase
    if data.char_ngrams > 1 and name != "char":
        raise DataError(f"data.char_ngrams applies to data.tokenizer=char, not {name!r}; remove it")
    if name == "regex":
        return RegexTokenizer(lowercase=lowercase, pattern=data.token_pattern)
    if name == "whitespace":
        return WhitespaceTokenizer(lowercase=lowercase)
    if name == "char":
        return CharTokenizer(lowercase=lowercase, ngrams=data.char_ngrams)
    if name == "jieba":
        _jieba()  # a missing extra fails here, before any data is read
        return JiebaTokenizer(lowercase=lowercase)
    if name in _REGISTRY:
        return RegisteredTokenizer(name=name, lowercase=lowercase)
    if names_a_file(name):
        return HuggingFaceTokenizer.from_file(name, lowercase=lowercase)
    known = [*BUILT_IN, *_REGISTRY]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DataError(
        f"data.tokenizer {name!r} is not one of {', '.join(known)}, a registered tokenizer "
        f"or a Hugging Face tokenizers .json file{hint}"
    )


_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (RegexTokenizer, WhitespaceTokenizer, CharTokenizer, JiebaTokenizer, HuggingFaceTokenizer)
}
_KINDS[RegisteredTokenizer.kind] = RegisteredTokenizer


def tokenizer_from_dict(data: Any) -> TextTokenizer:
    """Inverse of ``to_dict``; a vocabulary saved before tokenizers had kinds holds a regex one."""
    if not isinstance(data, dict) or not isinstance(data.get("lowercase"), bool):
        raise DataError("a saved tokenizer needs 'kind' and 'lowercase' (true/false)")
    kind = data.get("kind", "regex")
    cls = _KINDS.get(kind)
    if cls is None:
        raise DataError(f"a saved tokenizer has an unknown kind {kind!r}; it was written by a newer rnnkit")
    settings = {key: value for key, value in data.items() if key != "kind"}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    required = {name for name, f in fields.items() if f.default is dataclasses.MISSING}
    if not required <= set(settings) or not all(
        name in fields and _has_type(value, fields[name].type) for name, value in settings.items()
    ):
        shown = json.dumps(sorted(settings))
        raise DataError(f"a saved {kind} tokenizer has missing or invalid settings {shown}")
    return cls(**settings)


def _has_type(value: Any, annotation: str) -> bool:
    """``value`` is of the field's annotated type (``bool``, ``str`` or ``int``; a bool is not an int)."""
    expected = {"bool": bool, "str": str, "int": int}[annotation]
    return isinstance(value, expected) and isinstance(value, bool) == (expected is bool)
