#!/usr/bin/python3
"""A fake OpenAI-compatible API (/v1/embeddings, /v1/completions) for benchmarks and the lab.

Standard library only: the deploy copies it to lab hosts that have python3 and nothing else.

    python3 fake_openai_server.py --port 8080 --latency-ms 200 --rate-limit-per-s 50 \
        --burst 10 --capacity 64 --completion-cpu-ms 2000

- embeddings: answer after --latency-ms; the vector of a text is a pure function of the text
  (vector_of), so callers can check every result;
- completions: burn --completion-cpu-ms of CPU split across --cpu-workers processes (like
  llama.cpp using every core), then answer "echo: PROMPT";
- --capacity: requests served at once; the rest wait their turn (an endpoint's real limit);
- --rate-limit-per-s/--burst: a token bucket; past it, 429 with Retry-After (seconds) and
  retry-after-ms, as OpenAI's API sends;
- POST /admin/storm {"count": N}: the next N API requests get 429 (fault injection);
  GET /admin/stats: counts; GET /health.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_DIMENSIONS = 16
CONCURRENT_COMPLETIONS = 8
ANSWERS_KEPT = 256  # encoded embedding answers kept for repeated inputs


def vector_of(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The fake embedding of a text: deterministic, so results can be checked."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dimensions:
        digest += hashlib.sha256(digest).digest()
    return [round(byte / 255, 4) for byte in digest[:dimensions]]


def completion_of(prompt: str) -> str:
    return f"echo: {prompt}"


def burn_cpu(cpu_ms: float) -> float:
    """Spin until this process has used cpu_ms of CPU time."""
    end = time.process_time() + cpu_ms / 1000
    x = 0
    while time.process_time() < end:
        for _ in range(1000):
            x += 1
    return cpu_ms


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate, self.burst = rate_per_s, burst
        self.tokens, self.updated = float(burst), time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0 when a token was taken, else seconds until one will be there."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


class Backend:
    def __init__(self, args):
        self.args = args
        self.capacity = threading.BoundedSemaphore(args.capacity)
        self.bucket = TokenBucket(args.rate_limit_per_s, args.burst) \
            if args.rate_limit_per_s else None
        # room for several completions at once: they share the cores, as concurrent
        # llama.cpp requests do, instead of queueing behind each other
        self.pool = ProcessPoolExecutor(max_workers=args.cpu_workers * CONCURRENT_COMPLETIONS) \
            if args.completion_cpu_ms else None
        self.lock = threading.Lock()
        self.storm = 0
        self.stats = {"embeddings": 0, "completions": 0, "texts": 0, "rate_limited": 0,
                      "storm_429": 0, "max_in_flight": 0}
        self.in_flight = 0
        self.answers: dict = {}

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def refusal(self) -> float | None:
        """Seconds to tell the client to wait, or None to serve the request."""
        with self.lock:
            if self.storm > 0:
                self.storm -= 1
                self.stats["storm_429"] += 1
                return 0.2
        if self.bucket:
            wait = self.bucket.take()
            if wait > 0:
                self.count("rate_limited")
                return wait
        return None

    def serve(self, work):
        with self.capacity:
            with self.lock:
                self.in_flight += 1
                self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)
            try:
                return work()
            finally:
                with self.lock:
                    self.in_flight -= 1

    def embeddings(self, body: dict) -> dict:
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts

        def work():
            time.sleep(self.args.latency_ms / 1000)
            return self.answer_of(tuple(texts), body.get("model", "fake"))

        answer = self.serve(work)
        self.count("embeddings")
        self.count("texts", len(texts))
        return answer

    def answer_of(self, texts: tuple, model: str) -> bytes:
        """The encoded answer, kept for inputs seen before: a benchmark's batch of 48 texts x
        1024 floats costs the fake ~10 ms of CPU to encode, which would eat the cores the
        workers under test need."""
        key = (texts, model)
        if key not in self.answers:
            if len(self.answers) >= ANSWERS_KEPT:
                self.answers.clear()
            self.answers[key] = json.dumps({
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": i,
                          "embedding": vector_of(text, self.args.dimensions)}
                         for i, text in enumerate(texts)],
                "usage": {"prompt_tokens": sum(len(t.split()) for t in texts),
                          "total_tokens": sum(len(t.split()) for t in texts)}}).encode()
        return self.answers[key]

    def completions(self, body: dict) -> dict:
        prompt = str(body.get("prompt", ""))

        def work():
            if self.pool:
                share = self.args.completion_cpu_ms / self.args.cpu_workers
                list(self.pool.map(burn_cpu, [share] * self.args.cpu_workers))
            time.sleep(self.args.completion_latency_ms / 1000)
            return completion_of(prompt)

        text = self.serve(work)
        self.count("completions")
        return {"object": "text_completion", "model": body.get("model", "fake"),
                "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}


def make_handler(backend: Backend):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections
        # headers and body leave in two writes: with Nagle's algorithm the body waited for the
        # client's delayed ACK of the headers, ~40 ms added to every answer (measured: 96 ms
        # for a 50 ms latency)
        disable_nagle_algorithm = True

        def log_message(self, *args):  # quiet: thousands of requests per second
            pass

        def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.reply(200, {"status": "ok"})
            elif self.path == "/admin/stats":
                with backend.lock:
                    self.reply(200, dict(backend.stats))
            else:
                self.reply(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self.reply(400, {"error": {"message": "body is not JSON"}})
                return
            if self.path == "/admin/storm":
                with backend.lock:
                    backend.storm += int(body.get("count", 0))
                self.reply(200, {"storm": backend.storm})
                return
            routes = {"/v1/embeddings": backend.embeddings,
                      "/v1/completions": backend.completions}
            if self.path not in routes:
                self.reply(404, {"error": {"message": f"no route {self.path}"}})
                return
            wait = backend.refusal()
            if wait is not None:
                self.reply(429, {"error": {"message": "rate limit exceeded",
                                           "type": "rate_limit_exceeded"}},
                           {"Retry-After": str(max(1, math.ceil(wait))),
                            "retry-after-ms": str(max(1, int(wait * 1000)))})
                return
            self.reply(200, routes[self.path](body))

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of greenlets connect at once


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--completion-latency-ms", type=float, default=0)
    parser.add_argument("--completion-cpu-ms", type=float, default=0)
    parser.add_argument("--cpu-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--capacity", type=int, default=1024)
    parser.add_argument("--rate-limit-per-s", type=float, default=0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--dimensions", type=int, default=DEFAULT_DIMENSIONS)
    args = parser.parse_args(argv)
    backend = Backend(args)
    server = Server((args.host, args.port), make_handler(backend))
    print(f"fake OpenAI API on http://{args.host}:{server.server_address[1]}/v1", flush=True)
    # SIGTERM ends it cleanly: without this the completion pool's processes outlived it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if backend.pool:
            backend.pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    main()
