"""Real HTTP servers on 127.0.0.1 for client tests: a scripted server that records every request, and
a Bedrock Converse endpoint shaped like AWS's (moto does not implement bedrock-runtime `converse`)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import unquote


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: dict | None
    received_at: float


@dataclass
class Reply:
    status: int = 200
    body: dict | str = ""
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait before answering (longer than a client's timeout: a timeout)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """A threaded HTTP server answering POSTs with `respond(request)`; use as a context manager."""

    def __init__(self, respond: Callable[[Request], Reply]):
        self.respond = respond
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request("POST", unquote(self.path), dict(self.headers),
                                  json.loads(raw) if raw else None, time.monotonic())
                with server._lock:
                    server.requests.append(request)
                reply = server.respond(request)
                time.sleep(reply.delay_s)
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload.encode())))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is what a delayed reply tests

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True  # a delayed handler must not hold up shutdown
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


def scripted(*replies: Reply) -> Callable[[Request], Reply]:
    """Answer the n-th request with the n-th reply; the last reply repeats."""
    queue = list(replies)
    lock = threading.Lock()

    def respond(request: Request) -> Reply:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return respond


def after_failures(*failures: Reply, then: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
    """Answer the first requests with `failures`, in order, and every later one with `then`."""
    queue = list(failures)
    lock = threading.Lock()

    def respond(request: Request) -> Reply:
        with lock:
            failure = queue.pop(0) if queue else None
        return failure or then(request)

    return respond


def openai_answer(text: str, prompt_tokens: int | None = 11, completion_tokens: int | None = 5,
                  finish_reason: str = "stop") -> dict:
    answer = {"id": "cmpl-1", "object": "chat.completion", "model": "served",
              "choices": [{"index": 0, "finish_reason": finish_reason,
                           "message": {"role": "assistant", "content": text}}]}
    if prompt_tokens is not None:
        answer["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
    return answer


def bedrock_error(status: int, error_type: str, message: str) -> Reply:
    """An AWS JSON-protocol error: botocore reads the code from `x-amzn-ErrorType`."""
    return Reply(status, {"message": message}, {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"})


def bedrock_converse(request: Request) -> Reply:
    """POST /model/{modelId}/converse answered like AWS: the reply echoes the last user text, and the
    usage counts words (inputs: every system and message text; outputs: the reply's)."""
    parts = request.path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "model" or parts[2] != "converse":
        return bedrock_error(404, "ResourceNotFoundException", f"no route {request.path}")
    body = request.body or {}
    texts = [b["text"] for b in body.get("system", [])]
    texts += [c["text"] for m in body.get("messages", []) for c in m["content"]]
    last_user = [m for m in body.get("messages", []) if m["role"] == "user"][-1]
    reply = f"echo: {last_user['content'][0]['text']}"
    max_tokens = body.get("inferenceConfig", {}).get("maxTokens", 10**6)
    words = reply.split()[:max_tokens]
    input_tokens = sum(len(t.split()) for t in texts)
    return Reply(200, {
        "output": {"message": {"role": "assistant", "content": [{"text": " ".join(words)}]}},
        "stopReason": "max_tokens" if len(words) < len(reply.split()) else "end_turn",
        "usage": {"inputTokens": input_tokens, "outputTokens": len(words),
                  "totalTokens": input_tokens + len(words)},
        "metrics": {"latencyMs": 12},
    })
