"""The HTTP API of one trained run: ``POST /predict``, ``GET /health``, ``GET /labels``, ``/docs``.

The model is loaded once, when the app is made; requests that arrive together are classified in
one batch (:mod:`rnnkit.serve.batching`). Every error is a JSON object ``{"error": "one line"}``
with a 4xx status: a body over the size limit (413), a missing field, a wrong type, too many or
too long texts, an out-of-range ``top_k`` (422). The limits show in the OpenAPI schema at /docs.
"""

# No ``from __future__ import annotations``: FastAPI reads the request and response models from
# the annotations at runtime, and they are defined inside create_app (their limits are settings).

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from rnnkit.errors import ConfigError, shorten
from rnnkit.extras import require
from rnnkit.runs import TrainedRun
from rnnkit.serve.batching import MicroBatcher
from rnnkit.serve.limits import BodySizeLimit
from rnnkit.tasks import decide

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the server; checked once, when made."""

    max_texts: int = 64
    """Texts per request."""
    max_text_chars: int = 100_000
    """Characters per text (the model reads at most ``data.max_length`` tokens of it anyway)."""
    max_body_bytes: int = 2_000_000
    """Request body size; larger bodies are refused before they are parsed."""
    batch_window_ms: float = 2.0
    """How long the first request of a batch waits for others."""
    max_batch_texts: int = 256
    """Texts per forward pass."""
    batching: bool = True
    amp: bool = False
    """Matrix products in bfloat16 on CPUs that have it natively (float16 on CUDA): faster."""

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_text_chars", "max_body_bytes", "max_batch_texts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.batch_window_ms < 0:
            raise ConfigError(f"--batch-window-ms must be 0 or more, got {self.batch_window_ms}")
        if self.max_batch_texts < self.max_texts:
            raise ConfigError(
                f"--max-batch-texts ({self.max_batch_texts}) must hold one full request "
                f"(--max-texts {self.max_texts})"
            )


def create_app(run: TrainedRun, settings: ServeSettings | None = None) -> Any:
    """A FastAPI app serving ``run``; run it with uvicorn (see :func:`rnnkit.serve.serve`)."""
    fastapi = require("fastapi", "serve", "rnnkit serve")
    pydantic = require("pydantic", "serve", "rnnkit serve")
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    settings = settings or ServeSettings()
    labels = list(run.label_names)
    predictor = run.predictor(amp=settings.amp)
    batcher = MicroBatcher(
        predictor.predict_proba,
        window=settings.batch_window_ms / 1000,
        max_texts=settings.max_batch_texts,
        enabled=settings.batching,
    )
    Text = Annotated[str, pydantic.StringConstraints(max_length=settings.max_text_chars)]

    class PredictRequest(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        texts: list[Text] = pydantic.Field(
            min_length=1, max_length=settings.max_texts, description="the texts to classify"
        )
        top_k: int = pydantic.Field(
            1, ge=1, le=len(labels), description="classes listed per text, best first"
        )

    class LabelProbability(pydantic.BaseModel):
        label: str
        probability: float

    class Prediction(pydantic.BaseModel):
        label: str
        probability: float
        top_k: list[LabelProbability]
        labels: list[LabelProbability] | None = pydantic.Field(
            None, description="multi-label runs: the text's label set (at the run's thresholds), best first"
        )

    class PredictResponse(pydantic.BaseModel):
        predictions: list[Prediction]

    class ErrorResponse(pydantic.BaseModel):
        error: str

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        predictor.predict_proba(["warm up"])  # the first pass initialises the CPU kernels
        await batcher.start()
        yield
        await batcher.stop()

    errors = {status: {"model": ErrorResponse} for status in (413, 422)}
    app = fastapi.FastAPI(
        title=f"rnnkit: {run.path.name}",
        description=f"A {run.config.model.name} text classifier with {len(labels)} classes.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Any, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _one_line(error.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=errors)
    async def predict(request: PredictRequest) -> PredictResponse:
        """Labels and probabilities for each text, with the ``top_k`` most probable classes (and for
        a multi-label run its label set, ``labels``, possibly empty)."""
        probabilities = await batcher.classify(request.texts)
        chosen = decide(probabilities, predictor.task, predictor.thresholds)
        predictions = []
        for row, picked in zip(probabilities, chosen, strict=True):
            order = row.argsort(kind="stable")[::-1]
            scored = [LabelProbability(label=labels[i], probability=float(row[i])) for i in order]
            top = scored[: request.top_k]
            prediction = Prediction(label=top[0].label, probability=top[0].probability, top_k=top)
            if predictor.multilabel:
                prediction.labels = [pair for pair, i in zip(scored, order, strict=True) if picked[i]]
            predictions.append(prediction)
        return PredictResponse(predictions=predictions)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Whether the server is up, what it serves, and how many batches it ran."""
        return {
            "status": "ok",
            "run": str(run.path),
            "model": run.config.model.name,
            "classes": len(labels),
            "batches": batcher.batches,
            "texts": batcher.texts,
        }

    @app.get("/labels")
    async def label_names() -> dict[str, list[str]]:
        """The class names, in the order of the probability columns."""
        return {"labels": labels}

    return app


def _one_line(problems: list[dict[str, Any]]) -> str:
    """Pydantic's errors as ``where: what; ...`` (the first three), e.g. ``texts.2: String too long``."""
    parts = []
    for problem in problems[:3]:
        if problem.get("type") == "json_invalid":
            return f"the request body is not valid JSON ({problem.get('ctx', {}).get('error', 'unreadable')})"
        where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "body"
        where = shorten(" ".join(where.split()), 40)  # a client's key may be long or hold newlines
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(parts) + more
