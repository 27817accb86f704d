"""Classify texts with a model exported by ``rnnkit export``, without rnnkit.

    python classify.py "The shuttle launch was delayed again." [more texts...]
    python classify.py --file posts.txt          # one text per line

Prints ``LABEL<TAB>PROBABILITY`` per text. Needs numpy and onnxruntime (for ``model.onnx``) or
torch (for ``model.pt``); jieba or Hugging Face ``tokenizers`` if the run tokenised with them.
The text is read exactly as in training: lowercased (if the run did), split into tokens by the
run's tokenizer (``tokenizer.json``), mapped to ids (unknown words: ``<unk>``), cut to
``max_length``, right-padded with ``<pad>`` (0) in a batch.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_tokenizer(settings: dict) -> Callable[[str], list[str]]:
    """The run's tokenizer from ``tokenizer.json``: text -> tokens, as rnnkit splits it."""
    kind, lowercase = settings.get("kind", "regex"), settings["lowercase"]

    def prepare(text: str) -> str:
        return text.lower() if lowercase else text

    if kind == "regex":
        regex = re.compile(settings["pattern"])
        return lambda text: [token for token in regex.findall(prepare(text)) if token]
    if kind == "whitespace":
        return lambda text: prepare(text).split()
    if kind == "char":
        n = settings.get("ngrams", 1)

        def grams(text: str) -> list[str]:
            chars = [c for c in prepare(text) if not c.isspace()]
            return [
                "".join(chars[i : i + size])
                for i in range(len(chars))
                for size in range(1, min(n, len(chars) - i) + 1)
            ]

        return grams
    if kind == "jieba":
        import jieba

        return lambda text: [token for token in jieba.lcut(prepare(text)) if token.strip()]
    if kind == "huggingface":
        from tokenizers import Tokenizer

        hf = Tokenizer.from_str(settings["json"])
        return lambda text: [t for t in hf.encode(prepare(text), add_special_tokens=False).tokens if t]
    raise ValueError(
        f"the run tokenised with a {kind} tokenizer ({settings.get('name', '?')}), a Python function "
        "of its own: pass it as Classifier(folder, tokenize=function)"
    )


class Classifier:
    """The exported model in ``folder`` with its tokenizer, vocabulary and labels."""

    def __init__(
        self,
        folder: str | Path = HERE,
        threads: int | None = None,
        tokenize: Callable[[str], list[str]] | None = None,
    ) -> None:
        folder = Path(folder)
        settings = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        self.tokenize = tokenize or make_tokenizer(settings)
        self.max_length = settings["max_length"]
        self.pad_id, self.unk_id = settings["pad_id"], settings["unk_id"]
        vocabulary = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        self.ids = {token: index for index, token in enumerate(vocabulary)}
        self.labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        if (folder / "model.onnx").exists():
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options)
            self.module = None
        else:
            import torch

            if threads:
                torch.set_num_threads(threads)
            self.session = None
            self.module = torch.jit.load(str(folder / "model.pt"))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; an empty text is one ``<unk>``; the literal "<pad>" too."""
        tokens = self.tokenize(text)[: self.max_length]
        ids = [self.ids.get(token, self.unk_id) or self.unk_id for token in tokens]
        return ids or [self.unk_id]

    def run(self, token_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Probabilities ``(batch, classes)`` for right-padded int64 ``token_ids`` and ``lengths``."""
        if self.session is not None:
            feed = {"token_ids": token_ids, "lengths": lengths}
            return self.session.run(["probabilities"], feed)[0]
        import torch

        with torch.no_grad():
            _, probabilities = self.module(torch.from_numpy(token_ids), torch.from_numpy(lengths))
        return probabilities.numpy()

    def predict_proba(self, texts: Sequence[str], batch_size: int = 256, sort: bool = True) -> np.ndarray:
        """Probabilities per text, in the order given; ``sort`` batches texts of similar length."""
        encoded = [self.encode(text) for text in texts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if sort else range(len(encoded))
        order = list(order)
        result = np.zeros((len(encoded), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            lengths = np.array([len(encoded[i]) for i in rows], dtype=np.int64)
            token_ids = np.full((len(rows), int(lengths.max())), self.pad_id, dtype=np.int64)
            for row, index in enumerate(rows):
                token_ids[row, : lengths[row]] = encoded[index]
            result[rows] = self.run(token_ids, lengths)
        return result

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Classify texts with the exported model next to this file.")
    parser.add_argument("texts", nargs="*")
    parser.add_argument("--file", help="a text file with one text per line")
    args = parser.parse_args()
    texts = list(args.texts)
    if args.file:
        lines = Path(args.file).read_text(encoding="utf-8", errors="replace").splitlines()
        texts += [line for line in lines if line.strip()]
    classifier = Classifier()
    for row in classifier.predict_proba(texts):
        print(f"{classifier.labels[int(row.argmax())]}\t{row.max():.4f}")


if __name__ == "__main__":
    main()
