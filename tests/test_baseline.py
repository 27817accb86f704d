"""The built-in TF-IDF baseline: scikit-learn's features over the run's tokens, chosen on validation,
saved without pickle, and reported beside every run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.naive_bayes import ComplementNB
from sklearn.svm import LinearSVC
from test_trainer import cli_args, tiny_settings, train_tiny_run, write_corpus

from rnnkit import baseline as baseline_module
from rnnkit.baseline import LinearBaseline, evaluate_baseline, fit_baseline, fit_temperature, softmax
from rnnkit.cli import main
from rnnkit.training import experiment

VOCAB = 40


def random_documents(count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Documents of ids 2..VOCAB-1 whose label (0..2) raises the odds of a few ids."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    documents = []
    for label in labels:
        common = rng.integers(2, VOCAB, rng.integers(3, 20))
        topical = rng.integers(2 + 5 * label, 7 + 5 * label, rng.integers(1, 6))
        documents.append(np.concatenate([common, topical, [0, 1]]).astype(np.int32))  # pad and unk too
    return documents, labels


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def test_features_are_scikit_learns_tfidf_over_the_same_tokens():
    train = random_documents(60, seed=0)
    model = fit_baseline(train, random_documents(30, seed=1), VOCAB, 3)
    as_words = [" ".join(f"w{i}" for i in doc if i > 1) for doc in train[0]]
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.5, token_pattern=r"\S+")
    expected = vectorizer.fit_transform(as_words)
    kept = [int(name[1:]) for name in vectorizer.get_feature_names_out()]
    assert sorted(model.features.tolist()) == sorted(kept)
    ours = baseline_module._tfidf(baseline_module._counts(train[0], VOCAB)[:, model.features], model.idf)
    order = np.argsort([f"w{i}" for i in model.features])  # the vectorizer sorts its columns by name
    np.testing.assert_allclose(ours.toarray()[:, order], expected.toarray(), atol=1e-12)


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [(("linear_svc", 0.3), LinearSVC(C=0.3)), (("complement_nb", 0.3), ComplementNB(alpha=0.3))],
)
def test_its_predictions_are_those_of_the_chosen_scikit_learn_model(monkeypatch, candidate, reference):
    monkeypatch.setattr(baseline_module, "CANDIDATES", (candidate,))
    train, validation = random_documents(80, seed=2), random_documents(40, seed=3)
    model = fit_baseline(train, validation, VOCAB, 3)

    def features(documents):
        return baseline_module._tfidf(baseline_module._counts(documents, VOCAB)[:, model.features], model.idf)

    reference.fit(features(train[0]), train[1])
    np.testing.assert_array_equal(
        model.predict(validation[0], VOCAB), reference.predict(features(validation[0]))
    )


def test_the_candidate_with_the_best_validation_score_is_kept(monkeypatch):
    train, validation = random_documents(80, seed=4), random_documents(40, seed=5)
    scores = {}
    for name, strength in baseline_module.CANDIDATES:
        monkeypatch.setattr(baseline_module, "CANDIDATES", ((name, strength),))
        single = fit_baseline(train, validation, VOCAB, 3)
        scores[single.model] = evaluate_baseline(single, {"v": validation}, VOCAB, 3)["v"]["accuracy"]
    monkeypatch.undo()
    chosen = fit_baseline(train, validation, VOCAB, 3)
    assert scores[chosen.model] == max(scores.values())


def test_a_class_missing_from_training_is_never_predicted():
    documents, labels = random_documents(60, seed=6)
    keep = labels != 1
    model = fit_baseline(
        ([d for d, k in zip(documents, keep, strict=True) if k], labels[keep]),
        random_documents(20, seed=7),
        VOCAB,
        3,
    )
    assert 1 not in set(model.predict(random_documents(50, seed=8)[0], VOCAB).tolist())


def test_it_saves_as_safetensors_and_loads_back_to_the_same_scores(tmp_path):
    train = random_documents(60, seed=9)
    model = fit_baseline(train, random_documents(30, seed=10), VOCAB, 3)
    model.save(tmp_path / "baseline.safetensors")
    loaded = LinearBaseline.load(tmp_path / "baseline.safetensors")
    assert loaded.model == model.model
    np.testing.assert_array_equal(loaded.scores(train[0], VOCAB), model.scores(train[0], VOCAB))


def test_a_damaged_baseline_file_is_one_clear_error(tmp_path):
    (tmp_path / "baseline.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="damaged or not an rnnkit baseline; delete it"):
        LinearBaseline.load(tmp_path / "baseline.safetensors")


@pytest.mark.parametrize(
    ("documents", "labels", "reason"),
    [
        ([np.array([2, 3], np.int32)] * 6, np.array([0, 1] * 3), "no token"),
        ([np.array([2, 3, 4], np.int32)] * 6, np.zeros(6, np.int64), "single class"),
    ],
)
def test_data_it_cannot_learn_from_is_a_value_error(documents, labels, reason):
    with pytest.raises(ValueError, match=reason):
        fit_baseline((documents, labels), (documents, labels), VOCAB, 2)


def test_every_run_reports_the_baseline_beside_the_network(tmp_path):
    run = train_tiny_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    baseline = metrics["baseline"]
    assert set(baseline) >= {"model", "features", "validation", "test", "time_s"}
    assert 0.0 <= baseline["test"]["accuracy"] <= 1.0
    assert (run / "baseline.safetensors").is_file()
    assert "TF-IDF baseline on the same split" in (run / "report.txt").read_text()
    evaluated = experiment.evaluate(run, "test")
    assert evaluated["baseline"]["accuracy"] == pytest.approx(baseline["test"]["accuracy"])
    assert evaluated["baseline"]["macro_f1"] == pytest.approx(baseline["test"]["macro_f1"])


def test_train_baseline_false_fits_none(tmp_path):
    run = train_tiny_run(tmp_path, **{"train.baseline": False})
    assert "baseline" not in json.loads((run / "metrics.json").read_text())
    assert not (run / "baseline.safetensors").exists()
    assert "baseline" not in experiment.evaluate(run, "test")


def test_a_baseline_that_cannot_be_fitted_is_one_log_line_and_the_run_completes(tmp_path, caplog):
    corpus = tmp_path / "same.csv"
    corpus.write_text("text,label\n" + "".join(f"word,{'ab'[i % 2]}\n" for i in range(40)))
    with caplog.at_level("WARNING", logger="rnnkit"):
        assert main(["train", "--run-dir", str(tmp_path / "run"), *cli_args(tiny_settings(corpus))]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reason = "no token occurs in at least two and at most half of the training documents"
    assert metrics["baseline"] == {"skipped": reason}
    assert [r.message for r in caplog.records if "baseline skipped" in r.message]


def test_the_cli_prints_the_baseline_beside_the_test_accuracy(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    assert main(["train", "-q", "--run-dir", str(tmp_path / "run"), *cli_args(tiny_settings(corpus))]) == 0
    scores = r"accuracy [01]\.\d{4}  macro-F1 [01]\.\d{4}"
    assert re.search(rf"test {scores} .*\(TF-IDF baseline {scores}\)", capsys.readouterr().out)
    assert main(["evaluate", "--run-dir", str(tmp_path / "run")]) == 0
    assert "TF-IDF baseline (" in capsys.readouterr().out


def test_a_resumed_run_reuses_the_baseline_it_saved(tmp_path):
    run = train_tiny_run(tmp_path)
    saved = (run / "baseline.safetensors").read_bytes()
    before = json.loads((run / "metrics.json").read_text())["baseline"]
    assert main(["train", "-q", "--resume", str(run), "--set", "train.epochs=3"]) == 0
    after = json.loads((run / "metrics.json").read_text())["baseline"]
    assert (run / "baseline.safetensors").read_bytes() == saved
    assert after["test"] == before["test"]


def test_a_run_folder_names_its_baseline_file(tmp_path):
    from rnnkit.runs import RunDir

    assert RunDir(tmp_path).baseline_file == Path(tmp_path) / "baseline.safetensors"


def test_the_temperature_is_the_scale_at_which_the_scores_softmax_fits_the_labels_best():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4000, 3))
    probs = softmax(scores * 2.0)
    labels = np.array([rng.choice(3, p=row) for row in probs])
    assert fit_temperature(scores, labels) == pytest.approx(2.0, rel=0.15)
    assert softmax(np.array([[0.0, -np.inf]])).tolist() == [[1.0, 0.0]]


# ------------------------------------------------------------------------------------- multi-label


def random_label_sets(count: int, seed: int, labels: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """Documents of ids 2..VOCAB-1 with 0-2 of ``labels`` labels, each raising the odds of a few ids."""
    rng = np.random.default_rng(seed)
    matrix = (rng.random((count, labels)) < 0.35).astype(np.float32)
    documents = []
    for row in matrix:
        ids = [rng.integers(2, VOCAB, rng.integers(3, 15))]
        ids += [rng.integers(2 + 8 * j, 10 + 8 * j, rng.integers(2, 6)) for j in np.flatnonzero(row)]
        documents.append(np.concatenate(ids).astype(np.int32))
    return documents, matrix


def test_multilabel_data_gets_scikit_learns_one_vs_rest_linear_svc(monkeypatch):
    from sklearn.multiclass import OneVsRestClassifier

    monkeypatch.setattr(baseline_module, "MULTILABEL_CANDIDATES", (("ovr_linear_svc", 0.3),))
    train, validation = random_label_sets(120, seed=11), random_label_sets(60, seed=12)
    model = fit_baseline(train, validation, VOCAB, 4, monitor="micro_f1")
    assert model.task == "multilabel" and model.model == "ovr_linear_svc(C=0.3)"

    def features(documents):
        return baseline_module._tfidf(baseline_module._counts(documents, VOCAB)[:, model.features], model.idf)

    reference = OneVsRestClassifier(LinearSVC(C=0.3)).fit(features(train[0]), train[1].astype(int))
    np.testing.assert_array_equal(
        model.predict(validation[0], VOCAB), reference.predict(features(validation[0]))
    )


def test_a_label_no_training_document_has_is_never_predicted_and_scores_are_multilabel_ones():
    train, validation = random_label_sets(120, seed=13), random_label_sets(60, seed=14)
    train[1][:, 2] = 0
    model = fit_baseline(train, validation, VOCAB, 4, monitor="micro_f1")
    assert not model.predict(random_label_sets(80, seed=15)[0], VOCAB)[:, 2].any()
    scores = evaluate_baseline(model, {"v": validation}, VOCAB, 4)["v"]
    assert set(scores) == {"accuracy", "micro_f1", "macro_f1", "samples_f1", "hamming_loss"}


def test_a_multilabel_baseline_saves_its_task_and_thresholds(tmp_path):
    train = random_label_sets(80, seed=16)
    model = fit_baseline(train, random_label_sets(40, seed=17), VOCAB, 4)
    model.thresholds = np.array([0.3, 0.5, 0.7, 0.45])
    model.save(tmp_path / "baseline.safetensors")
    loaded = LinearBaseline.load(tmp_path / "baseline.safetensors")
    assert loaded.task == "multilabel" and loaded.thresholds.tolist() == [0.3, 0.5, 0.7, 0.45]
    np.testing.assert_array_equal(loaded.predict(train[0], VOCAB), model.predict(train[0], VOCAB))


def test_a_multilabel_run_reports_its_one_vs_rest_baseline_with_thresholds_tuned_on_validation(
    tmp_path, capsys
):
    from test_training_multilabel import multilabel_settings, write_multilabel_corpus

    from rnnkit.runs import RunDir

    corpus = write_multilabel_corpus(tmp_path / "docs.jsonl")
    run = tmp_path / "run"
    assert main(["train", "-q", "--run-dir", str(run), *cli_args(multilabel_settings(corpus))]) == 0
    scores = r"micro-F1 [01]\.\d{4}  macro-F1 [01]\.\d{4}  subset accuracy [01]\.\d{4}"
    assert re.search(rf"test {scores} .*\(TF-IDF baseline {scores}\)", capsys.readouterr().out)
    baseline = json.loads((run / "metrics.json").read_text())["baseline"]
    assert baseline["model"].startswith("ovr_linear_svc(C=")
    assert set(baseline["test"]) >= {"micro_f1", "macro_f1", "samples_f1", "hamming_loss"}
    assert "TF-IDF baseline on the same split (ovr_linear_svc" in (run / "report.txt").read_text()
    assert experiment.evaluate(run, "test")["baseline"]["micro_f1"] == pytest.approx(
        baseline["test"]["micro_f1"]
    )
    model = LinearBaseline.load(run / "baseline.safetensors")
    assert model.thresholds is not None and model.thresholds.shape == (3,)
    folder = RunDir(run)
    data = folder.prepare_data(folder.load_config())
    validation = {"v": (data.token_ids["validation"], data.validation.labels)}
    tuned = evaluate_baseline(model, validation, len(data.vocab), 3)["v"]
    model.thresholds = None
    at_zero = evaluate_baseline(model, validation, len(data.vocab), 3)["v"]
    assert tuned["macro_f1"] >= at_zero["macro_f1"]  # each label's F1 is the best of a grid holding 0.5
    assert tuned["micro_f1"] == pytest.approx(baseline["validation"]["micro_f1"])
