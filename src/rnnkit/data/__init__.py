"""Data: loading, tokenisation, vocabulary, pretrained vectors and batching."""

from rnnkit.data.batching import Batch, BucketBatchSampler, EncodedDataset, SortedBatchSampler, collate
from rnnkit.data.corpus import (
    TextDataset,
    load_csv,
    load_folder,
    load_jsonl,
    load_labelled,
    load_user_data,
    split_dataset,
)
from rnnkit.data.newsgroups import load_20newsgroups
from rnnkit.data.pipeline import PreparedData, encode_texts, prepare_data
from rnnkit.data.text import DEFAULT_TOKEN_PATTERN, Tokenizer, Vocabulary
from rnnkit.data.tokenizers import (
    CharTokenizer,
    HuggingFaceTokenizer,
    JiebaTokenizer,
    RegexTokenizer,
    TextTokenizer,
    WhitespaceTokenizer,
    build_tokenizer,
    register_tokenizer,
)
from rnnkit.data.vectors import build_embeddings, load_vectors

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "Batch",
    "BucketBatchSampler",
    "CharTokenizer",
    "EncodedDataset",
    "HuggingFaceTokenizer",
    "JiebaTokenizer",
    "PreparedData",
    "RegexTokenizer",
    "SortedBatchSampler",
    "TextDataset",
    "TextTokenizer",
    "Tokenizer",
    "Vocabulary",
    "WhitespaceTokenizer",
    "build_embeddings",
    "build_tokenizer",
    "collate",
    "encode_texts",
    "load_20newsgroups",
    "load_csv",
    "load_folder",
    "load_jsonl",
    "load_labelled",
    "load_user_data",
    "load_vectors",
    "prepare_data",
    "register_tokenizer",
    "split_dataset",
]
