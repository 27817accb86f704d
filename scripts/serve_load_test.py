"""Load test of ``rnnkit serve``: N concurrent clients for D seconds, on this machine only.

Starts ``rnnkit serve`` on a free port of 127.0.0.1, waits for /health, then runs ``--clients``
clients that each send one test document per request, back to back, for ``--duration`` seconds.
Reports requests/s, p50/p99 latency, failed requests and the server's mean batch size; with
``--compare``, runs the same load against a server with ``--no-batching`` too. Bounded: at most
64 clients and 120 s per server, every request times out after 30 s, loopback only.

    python scripts/serve_load_test.py --run-dir runs/quickstart --clients 20 --duration 30 --compare
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from check_export import test_texts

from rnnkit.runs import open_run

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(run_dir: str, extra: list[str], threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "rnnkit",
        "serve",
        "--run-dir",
        run_dir,
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    process = subprocess.Popen([*command, *extra], env=env)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            httpx.get(f"{url}/health", timeout=5)
            return process, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("the server did not answer within 180 s") from None
            time.sleep(0.2)


async def client(
    http: httpx.AsyncClient, texts: list[str], offset: int, stop_at: float, record: dict
) -> None:
    index = offset
    while time.perf_counter() < stop_at:
        text = texts[index % len(texts)]
        index += 1
        started = time.perf_counter()
        try:
            response = await http.post("/predict", json={"texts": [text]})
            ok = response.status_code == 200 and len(response.json()["predictions"]) == 1
        except (httpx.HTTPError, ValueError):
            ok = False
        record["latencies"].append(time.perf_counter() - started)
        record["failures"] += not ok


async def load(url: str, texts: list[str], clients: int, duration: float) -> dict:
    record: dict = {"latencies": [], "failures": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        before = (await http.get("/health")).json()
        started = time.perf_counter()
        stop_at = started + duration
        await asyncio.gather(*(client(http, texts, i * 997, stop_at, record) for i in range(clients)))
        elapsed = time.perf_counter() - started
        after = (await http.get("/health")).json()
    latencies = np.array(record["latencies"]) * 1000
    batches = after["batches"] - before["batches"]
    return {
        "requests": len(latencies),
        "failures": record["failures"],
        "seconds": round(elapsed, 2),
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
        "forward_passes": batches,
        "mean_texts_per_pass": (after["texts"] - before["texts"]) / max(batches, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True, help="a 20 Newsgroups run (its test documents are sent)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per server")
    parser.add_argument("--compare", action="store_true", help="also load a server with --no-batching")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server (default: torch's)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.duration <= 120:
        raise SystemExit("--clients must be 1..64 and --duration 1..120 s")
    texts = test_texts(open_run(args.run_dir))
    results = {}
    for name, extra in [("batching", []), ("no batching", ["--no-batching"])][: 2 if args.compare else 1]:
        process, url = start_server(args.run_dir, extra, args.threads)
        try:
            result = asyncio.run(load(url, texts, args.clients, args.duration))
        finally:
            process.terminate()
            process.wait(timeout=30)
        results[name] = result
        print(
            f"{name}: {args.clients} clients x {result['seconds']} s: {result['requests']} requests, "
            f"{result['requests_per_second']:.1f} requests/s, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms, {result['failures']} failed; "
            f"{result['mean_texts_per_pass']:.1f} texts per forward pass"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
