"""`vllm serve` for lab hosts without GPUs: the flags celery-fleet renders are checked as
vLLM's parser would take them (an unknown or malformed flag exits 2 with a message, like
argparse), the GPU must be pinned (CUDA_VISIBLE_DEVICES: one index), then a small HTTP server
answers POST /v1/completions and GET /v1/models. Each completion says which GPU and which
settings served it, so a test sees the whole path: worker instance -> its server -> its GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1]")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--served-model-name", required=True)
    serve.add_argument("--host", required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--max-num-seqs", type=int, required=True)
    serve.add_argument("--gpu-memory-utilization", type=_share, required=True)
    serve.add_argument("--max-model-len", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not gpu.isdigit():
        sys.exit(f"vllm (fake): CUDA_VISIBLE_DEVICES={gpu!r}: one GPU index expected")
    if not Path(args.model).exists():
        sys.exit(f"vllm (fake): model {args.model} not found")
    if args.max_num_seqs < 1 or args.max_model_len < 1:
        sys.exit("vllm (fake): --max-num-seqs and --max-model-len must be >= 1")
    served = (f"gpu{gpu} seqs={args.max_num_seqs} util={args.gpu_memory_utilization} "
              f"len={args.max_model_len}")
    print(f"vllm (fake) serving {args.model} as {args.served_model_name}: {served}",
          flush=True)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's name)
            self._answer(200, {"object": "list", "data": [{"id": args.served_model_name}]})

        def do_POST(self):  # noqa: N802
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if request.get("model") != args.served_model_name:
                self._answer(404, {"error": f"model {request.get('model')!r} not served"})
                return
            tokens = int(request.get("max_tokens") or 16)
            self._answer(200, {"object": "text_completion", "model": args.served_model_name,
                               "choices": [{"index": 0, "finish_reason": "length",
                                            "text": f"[{served}] {request.get('prompt')}"}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": tokens,
                                         "total_tokens": tokens + 1}})

        def log_message(self, *args):  # quiet: the journal gets the startup line only
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
