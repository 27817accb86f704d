"""Micro-batching: texts of requests that arrive together are classified in one forward pass.

A recurrent model's time loop costs about the same for 1 text as for 32 of similar length, so on a
busy server one pass over everyone's texts beats one pass per request. Requests wait in a queue;
a single worker takes the first, collects whatever else arrives within ``window`` seconds (up to
``max_texts`` texts), runs the model once in a worker thread (the event loop keeps accepting
connections meanwhile), and hands each request its own rows. While a pass runs, new requests
queue up and form the next batch, so under load batches grow by themselves; ``window`` only
matters when requests trickle in. ``enabled=False`` runs each request alone, for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Classify = Callable[[list[str]], np.ndarray]


@dataclass
class _Request:
    texts: Sequence[str]
    result: asyncio.Future[np.ndarray] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher:
    """Collects concurrent :meth:`classify` calls into batches for ``classify_batch``."""

    def __init__(
        self, classify_batch: Classify, window: float = 0.002, max_texts: int = 256, enabled: bool = True
    ) -> None:
        self.classify_batch = classify_batch
        self.window = window
        self.max_texts = max_texts
        self.enabled = enabled
        self._held: _Request | None = None  # did not fit into the last batch: first in the next
        self.batches = 0
        self.texts = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities for ``texts``, computed in a batch with other requests' texts."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        request = _Request(texts)
        await self._queue.put(request)
        return await request.result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            texts = [text for request in batch for text in request.texts]
            try:
                probabilities = await loop.run_in_executor(self._executor, self.classify_batch, texts)
            except Exception as error:  # the requests fail, the server keeps serving
                for request in batch:
                    if not request.result.done():
                        request.result.set_exception(error)
                continue
            self.batches += 1
            self.texts += len(texts)
            start = 0
            for request in batch:
                if not request.result.done():  # a client that went away cancelled its future
                    request.result.set_result(probabilities[start : start + len(request.texts)])
                start += len(request.texts)

    async def _collect(self) -> list[_Request]:
        """The first waiting request plus what arrives within the window, up to ``max_texts``."""
        assert self._queue is not None
        first, self._held = self._held or await self._queue.get(), None
        batch, count = [first], len(first.texts)
        deadline = asyncio.get_running_loop().time() + self.window
        while self.enabled and count < self.max_texts:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if count + len(request.texts) > self.max_texts:
                self._held = request
                break
            batch.append(request)
            count += len(request.texts)
        return batch
