"""Data: loading, tokenisation, vocabulary, pretrained vectors and batching."""

from rnnkit.data.batching import Batch, BucketBatchSampler, EncodedDataset, SortedBatchSampler, collate
from rnnkit.data.corpus import TextDataset, load_csv, load_folder, load_jsonl, load_user_data, split_dataset
from rnnkit.data.newsgroups import load_20newsgroups
from rnnkit.data.pipeline import PreparedData, encode_texts, prepare_data
from rnnkit.data.text import DEFAULT_TOKEN_PATTERN, Tokenizer, Vocabulary
from rnnkit.data.vectors import build_embeddings, load_vectors

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "Batch",
    "BucketBatchSampler",
    "EncodedDataset",
    "PreparedData",
    "SortedBatchSampler",
    "TextDataset",
    "Tokenizer",
    "Vocabulary",
    "build_embeddings",
    "collate",
    "encode_texts",
    "load_20newsgroups",
    "load_csv",
    "load_folder",
    "load_jsonl",
    "load_user_data",
    "load_vectors",
    "prepare_data",
    "split_dataset",
]
