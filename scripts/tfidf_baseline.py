"""A TF-IDF linear baseline on exactly a run's split and tokens, scored like the run.

    python scripts/tfidf_baseline.py --run-dir runs/reuters

Fits ``TfidfTransformer(sublinear_tf=True)`` + ``LinearSVC`` (one-vs-rest over the labels for a
multi-label run) on the run's training part, over the run's own token ids (untruncated, so the
baseline sees whole documents and whatever tokenizer the run used), and prints its test metrics
beside the run's ``metrics.json``, computed by the same :func:`rnnkit.training.metrics.summarize`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from rnnkit.inference import Predictions
from rnnkit.runs import RunDir
from rnnkit.tasks import MULTILABEL, task_of
from rnnkit.training.metrics import summarize


def counts(sequences: list[np.ndarray], vocab_size: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    ids = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
    matrix = sp.csr_matrix((np.ones(len(ids)), (rows, ids)), shape=(len(sequences), vocab_size))
    matrix.sum_duplicates()
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    cfg = run.load_config()
    whole = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_length=10**9))
    data = run.prepare_data(whole)
    size = len(data.vocab)
    tfidf = TfidfTransformer(sublinear_tf=True)
    train = tfidf.fit_transform(counts(data.train.sequences, size))
    test = tfidf.transform(counts(data.test.sequences, size))
    multilabel = task_of(data.train.labels) == MULTILABEL
    model = OneVsRestClassifier(LinearSVC()) if multilabel else LinearSVC()
    model.fit(train, data.train.labels.astype(np.int64))
    predicted = model.predict(test)
    # summarize() decides from probabilities: one-hot (or 0/1) decisions give the model's own choices.
    probs = predicted.astype(np.float32) if multilabel else np.eye(len(data.label_names))[predicted]
    baseline = summarize(
        Predictions(data.test.labels, probs, np.zeros(len(test.indptr) - 1)), len(data.label_names)
    )
    baseline.pop("loss")
    rnn = json.loads(run.metrics_file.read_text())["test"]
    keys = [key for key in baseline if key in rnn]
    print(f"{'metric':<14}{'rnnkit':>10}{'tf-idf':>10}")
    for key in keys:
        print(f"{key:<14}{rnn[key]:>10.4f}{baseline[key]:>10.4f}")


if __name__ == "__main__":
    main()
