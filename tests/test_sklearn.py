"""rnnkit as a scikit-learn estimator: cloneable, in cross_val_score, GridSearchCV and a Pipeline,
and scikit-learn's own estimator checks, as far as they apply to text input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import check_estimator

from rnnkit.sklearn import RNNTextClassifier

TEXTS = [f"rocket launch orbit nasa {i}" for i in range(20)] + [f"puck goal ice team {i}" for i in range(20)]
LABELS = np.array([7] * 20 + [3] * 20)
TINY = {"epochs": 2, "hidden_size": 8, "embedding_dim": 8, "lr": 0.02}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def test_predict_returns_the_labels_it_was_given_and_probabilities_per_class() -> None:
    model = RNNTextClassifier(**TINY).fit(TEXTS, LABELS)
    assert model.classes_.tolist() == [3, 7]
    assert set(model.predict(TEXTS[:4]).tolist()) <= {3, 7}
    assert model.predict_proba(TEXTS[:4]).shape == (4, 2)
    assert 0.0 <= model.score(TEXTS, LABELS) <= 1.0


def test_it_clones_with_its_parameters_and_pickles_with_its_model() -> None:
    model = RNNTextClassifier(hidden_size=16, settings={"dropout": 0.1})
    assert clone(model).get_params() == model.get_params()
    assert model.set_params(hidden_size=4).hidden_size == 4
    fitted = RNNTextClassifier(**TINY).fit(TEXTS, LABELS)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.predict_proba(TEXTS[:3]), fitted.predict_proba(TEXTS[:3]), rtol=1e-5)


def test_cross_val_score_grid_search_and_a_pipeline_run_it() -> None:
    scores = cross_val_score(RNNTextClassifier(**TINY), TEXTS, LABELS, cv=2)
    assert scores.shape == (2,)
    search = GridSearchCV(RNNTextClassifier(**TINY), {"hidden_size": [4, 8]}, cv=2).fit(TEXTS, LABELS)
    assert search.best_params_["hidden_size"] in (4, 8) and len(search.cv_results_["params"]) == 2
    shout = FunctionTransformer(lambda texts: [text.upper() for text in texts])
    pipeline = make_pipeline(shout, RNNTextClassifier(**TINY)).fit(TEXTS, LABELS)
    assert len(pipeline.predict(TEXTS[:2])) == 2


def test_a_label_indicator_matrix_trains_a_multilabel_model_that_predicts_one() -> None:
    indicator = np.array([[1, 0, 1] if label == 7 else [0, 1, 1] for label in LABELS])
    model = RNNTextClassifier(**TINY).fit(TEXTS, indicator)
    predicted = model.predict(TEXTS[:5])
    assert predicted.shape == (5, 3) and set(np.unique(predicted)) <= {0, 1}


def test_bad_input_is_a_type_or_value_error() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        RNNTextClassifier(**TINY).fit("one text", [1])
    with pytest.raises(TypeError, match=r"X\[1\] is int"):
        RNNTextClassifier(**TINY).fit(["a", 3], [1, 2])
    with pytest.raises(ValueError, match="one class"):
        RNNTextClassifier(**TINY).fit(["a", "b"], [1, 1])


def test_the_checks_scikit_learn_runs_on_a_string_input_estimator_pass() -> None:
    # With input_tags.string (and no 2-D arrays) scikit-learn runs only its API checks on the
    # estimator itself; the behavioural checks run through the adapter in the next test.
    results = check_estimator(RNNTextClassifier(**TINY), on_fail=None)
    assert results and all(result["status"] == "passed" for result in results)


def rows_as_text(X: np.ndarray) -> list[str]:
    """Numeric rows as words ("f0_3 f1_-1 ..."), so that scikit-learn's checks, which generate
    numeric data, reach the estimator with text."""
    return [" ".join(f"f{j}_{round(float(v))}" for j, v in enumerate(row)) for row in X]


ADAPTER_FAILURES = {
    "check_estimators_overwrite_params": "the Pipeline fits the steps it holds in place",
    "check_dont_overwrite_parameters": "the Pipeline fits the steps it holds in place",
    "check_classifiers_train": "one epoch of a tiny GRU on numbers written as words stays under the "
    "check's 0.83 accuracy, and the check's wrong-feature-count errors do not apply to text",
}
"""Checks that fail through the adapter, and why; any other failure fails the test."""


@pytest.mark.slow
def test_scikit_learns_estimator_checks_through_a_numbers_to_text_adapter() -> None:
    tiny = {"epochs": 1, "hidden_size": 2, "embedding_dim": 2, "max_length": 10}
    adapter = make_pipeline(FunctionTransformer(rows_as_text, validate=True), RNNTextClassifier(**tiny))
    results = check_estimator(adapter, on_fail=None, expected_failed_checks=ADAPTER_FAILURES)
    unexpected = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    assert not unexpected
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_estimators_pickle", "check_fit_idempotent", "check_classifiers_classes"} <= passed
    assert "check_classifiers_multilabel_output_format_predict_proba" in passed
