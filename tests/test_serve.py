"""``rnnkit serve``: the real server process over HTTP, its limits, and micro-batching."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_cli import fails_with
from test_trainer import train_tiny_run

import rnnkit
from rnnkit.serve import MicroBatcher

MAX_TEXTS, MAX_TEXT_CHARS, MAX_BODY = 5, 1000, 200_000
TEXTS = ["nasa launch orbit moon", "puck goal playoff", "", "peace treaty land"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("serve"), **{"train.epochs": 3})


@pytest.fixture(scope="module")
def server(run_dir):
    """``python -m rnnkit serve`` on a free port of 127.0.0.1, as a user starts it."""
    port = free_port()
    command = [sys.executable, "-m", "rnnkit", "serve", "--run-dir", str(run_dir), "--port", str(port)]
    command += ["--max-texts", str(MAX_TEXTS), "--max-text-chars", str(MAX_TEXT_CHARS)]
    command += ["--max-body-bytes", str(MAX_BODY)]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                client.get("/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not answer within 180 s"
                time.sleep(0.2)
        yield client, process
    process.terminate()
    process.wait(timeout=30)


def test_health_labels_and_the_api_docs_answer(server):
    client, _ = server
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "gru" and health["classes"] == 3
    assert client.get("/labels").json() == {"labels": ["hockey", "mideast", "space"]}
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]["maxItems"] == MAX_TEXTS


def test_predict_returns_rnnkits_labels_probabilities_and_top_k(server, run_dir):
    client, _ = server
    response = client.post("/predict", json={"texts": TEXTS, "top_k": 2})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    expected = rnnkit.load(run_dir).predict_proba(TEXTS)
    labels = ["hockey", "mideast", "space"]
    for prediction, row in zip(predictions, expected, strict=True):
        assert prediction["label"] == labels[int(row.argmax())]
        assert prediction["probability"] == pytest.approx(float(row.max()), abs=1e-6)
        assert [p["label"] for p in prediction["top_k"]] == [labels[i] for i in np.argsort(-row)[:2]]


def test_concurrent_requests_each_get_their_own_answers(server, run_dir):
    client, _ = server
    texts = [f"{'nasa orbit ' * (i % 7)}puck {i}" for i in range(24)]
    expected = rnnkit.load(run_dir).predict_proba(texts)

    def ask(text: str) -> float:
        return client.post("/predict", json={"texts": [text]}).json()["predictions"][0]["probability"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(ask, texts))
    np.testing.assert_allclose(got, expected.max(axis=1), atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({}, 422, "texts: Field required"),
        ({"texts": "one text"}, 422, "texts: Input should be a valid list"),
        ({"texts": []}, 422, "texts: List should have at least 1 item"),
        ({"texts": ["a"] * (MAX_TEXTS + 1)}, 422, f"at most {MAX_TEXTS} items"),
        ({"texts": ["a" * (MAX_TEXT_CHARS + 1)]}, 422, f"at most {MAX_TEXT_CHARS} characters"),
        ({"texts": [3]}, 422, "texts.0: Input should be a valid string"),
        ({"texts": ["a"], "top_k": 0}, 422, "top_k"),
        ({"texts": ["a"], "top_k": 4}, 422, "top_k"),
        ({"texts": ["a"], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
        ({"texts": ["a" * 10_000_000]}, 413, "larger than"),
    ],
)
def test_bad_requests_get_a_4xx_json_error_and_the_server_keeps_serving(server, body, status, fragment):
    client, process = server
    response = client.post("/predict", json=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert client.post("/predict", json={"texts": ["nasa"]}).status_code == 200
    assert process.poll() is None


def test_a_body_that_is_not_json_or_streams_past_the_limit_is_refused(server):
    client, _ = server
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"texts": ["'
        for _ in range(30):
            yield b"a" * 10_000
        yield b'"]}'

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/predict").status_code == 405


def test_without_fastapi_and_uvicorn_the_cli_names_the_pip_command(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    fails_with(capsys, ["serve", "--run-dir", str(run_dir)], "pip install 'rnnkit[serve]'")


def test_impossible_limits_are_one_line(run_dir, capsys):
    fails_with(
        capsys, ["serve", "--run-dir", str(run_dir), "--max-texts", "0"], "--max-texts must be at least 1"
    )


class CountingModel:
    """Stands in for a model: the probability of each text is its length; records each batch."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if self.fail_on in texts:
            raise ValueError("model failure")
        return np.array([[len(text)] for text in texts], dtype=np.float32)


def run_requests(batcher: MicroBatcher, requests: list[list[str]]) -> list:
    async def go() -> list:
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.classify(r) for r in requests), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(go())


def test_requests_that_arrive_together_share_one_forward_pass_and_get_their_own_rows():
    model = CountingModel()
    results = run_requests(MicroBatcher(model, window=0.05), [["a"], ["bb", "ccc"], ["dddd"]])
    assert model.batches == [["a", "bb", "ccc", "dddd"]]
    assert [r[:, 0].tolist() for r in results] == [[1], [2, 3], [4]]


def test_without_batching_each_request_has_its_own_forward_pass():
    model = CountingModel()
    run_requests(MicroBatcher(model, window=0.05, enabled=False), [["a"], ["bb"], ["ccc"]])
    assert model.batches == [["a"], ["bb"], ["ccc"]]


def test_a_batch_never_exceeds_max_texts_and_keeps_arrival_order():
    model = CountingModel()
    run_requests(MicroBatcher(model, window=0.05, max_texts=3), [["a", "b"], ["c", "d"], ["e"]])
    assert model.batches == [["a", "b"], ["c", "d", "e"]]


def test_a_failing_batch_fails_its_requests_only():
    model = CountingModel(fail_on="boom")
    batcher = MicroBatcher(model, window=0.0, enabled=False)
    results = run_requests(batcher, [["boom"], ["fine"]])
    assert isinstance(results[0], ValueError) and results[1][:, 0].tolist() == [4]
    assert batcher.batches == 1  # the failed pass is not counted


def test_amp_serves_with_mixed_precision_products(run_dir, amp_of_predictions):
    """``rnnkit serve --amp``: the server's forward passes run under autocast (faster on the CPU)."""
    from fastapi.testclient import TestClient

    from rnnkit.runs import open_run
    from rnnkit.serve import ServeSettings, create_app

    with TestClient(create_app(open_run(run_dir), ServeSettings(amp=True))) as client:
        response = client.post("/predict", json={"texts": TEXTS[:2]})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 2
    assert amp_of_predictions and all(amp_of_predictions)  # the warm-up pass and the request's


def test_quantize_serves_the_int8_model_that_predict_quantize_runs(run_dir, monkeypatch):
    """``rnnkit serve --quantize``: the app answers with the probabilities of ``load(run, quantize=True)``."""
    import uvicorn
    from fastapi.testclient import TestClient

    from rnnkit.cli import main

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **settings: served.append(app))
    assert main(["serve", "--run-dir", str(run_dir), "--quantize"]) == 0
    with TestClient(served[0]) as client:
        predictions = client.post("/predict", json={"texts": TEXTS}).json()["predictions"]
    int8, exact = rnnkit.load(run_dir, quantize=True), rnnkit.load(run_dir)
    expected = int8.predict_proba(TEXTS)
    assert not np.array_equal(expected, exact.predict_proba(TEXTS))  # int8 moves the probabilities
    for prediction, row in zip(predictions, expected, strict=True):
        assert prediction["probability"] == pytest.approx(float(row.max()), abs=1e-6)


def test_quantize_and_amp_together_are_refused_in_one_line(run_dir, capsys):
    fails_with(
        capsys, ["serve", "--run-dir", str(run_dir), "--quantize", "--amp"], "choose --quantize or --amp"
    )


def test_a_clients_odd_key_is_named_on_one_short_line(server):
    client, _ = server
    for key in ["\n", "k" * 5000]:
        response = client.post("/predict", json={"texts": ["a"], key: 1})
        error = response.json()["error"]
        assert response.status_code == 422 and "Extra inputs are not permitted" in error
        assert "\n" not in error and len(error) < 100
