"""A stand-in for a vLLM OpenAI-compatible server with runtime LoRA updating, as a real HTTP process.

vLLM cannot run on these CPUs, so the vLLM client is tested against this process instead. Run it as
`python vllm_stub_server.py --port 0 [options]`; it prints `listening on http://HOST:PORT` once it
accepts connections.

What it does, following vLLM's documented endpoints (`vllm serve BASE --enable-lora` with
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`):
- `GET /health`: 200, empty body.
- `GET /v1/models`: `{"object": "list", "data": [cards]}`; the base model's card (id =
  `--base-model-name`, root = the same, parent null) and one per loaded adapter (id = lora_name,
  root = lora_path, parent = the base model's id).
- `POST /v1/load_lora_adapter` {lora_name, lora_path, load_inplace?}: 400 `InvalidUserInput` when a
  field is missing or the name is loaded and `load_inplace` is not true; 404 `NotFoundError` when
  `lora_path/adapter_config.json` does not exist; reads the rank from that file (`r`, and
  `rank_pattern` values) and answers 400 "LoRA rank R is greater than max_lora_rank M." above
  `--max-lora-rank`; 400 when `adapter_model.safetensors` is missing or its header is not a valid
  safetensors header (8-byte little-endian length, then that many bytes of JSON). Sleeps
  `--load-delay-s` before registering the adapter (vLLM reads the weights meanwhile; a request for the
  name in that window gets 404, as it does in vLLM after an unload). Success: 200, plain text
  "Success: LoRA adapter 'NAME' added successfully.".
- `POST /v1/unload_lora_adapter` {lora_name}: 404 `NotFoundError` for a name not loaded, else 200
  plain text. Both LoRA routes answer 404 unless `VLLM_ALLOW_RUNTIME_LORA_UPDATING` is "True", as in
  vLLM, where the routes do not exist then.
- `POST /v1/chat/completions`: 404 "The model `NAME` does not exist." for a name neither the base nor
  loaded; otherwise the reply text is `[NAME] answered by ROOT`, cut to `max_tokens` words, with
  `usage` counting words, and `system_fingerprint` = `NAME-` + the first 12 hex of the sha256 of the
  adapter's weights file (the base model: `NAME-base`). An adapter whose path contains
  `--fail-completions-for` loads fine but its completions answer 500 (an adapter the engine cannot run).
- Errors use vLLM's body `{"error": {"message", "type", "param", "code"}}`.
- `GET /stub/log`: every request it handled, in order: `{"method", "path", "body", "status"}` (not a
  vLLM endpoint: it lets a test check the order of unloads and loads).

What it does not do: load any tensor, check that an adapter fits a base model, generate text, batch,
stream, or honour sampling parameters; it keeps no state across restarts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class StubError(Exception):
    def __init__(self, status: int, message: str, err_type: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param


def safetensors_header_ok(path: Path) -> bool:
    data = path.read_bytes()
    if len(data) < 8:
        return False
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and 8 + length <= len(data)


class Stub:
    def __init__(self, args):
        self.args = args
        self.adapters: dict[str, dict] = {}  # name -> {"root", "fingerprint"}
        self.lock = threading.Lock()
        self.log: list[dict] = []
        self.runtime_updates = os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") == "True"

    def cards(self) -> dict:
        base = self.args.base_model_name
        with self.lock:
            adapters = dict(self.adapters)
        data = [{"id": base, "object": "model", "created": 0, "owned_by": "vllm", "root": base, "parent": None}]
        data += [{"id": name, "object": "model", "created": 0, "owned_by": "vllm", "root": a["root"],
                  "parent": base} for name, a in adapters.items()]
        return {"object": "list", "data": data}

    def load(self, body: dict) -> str:
        name, path, inplace = body.get("lora_name"), body.get("lora_path"), body.get("load_inplace", False)
        if not name or not path:
            raise StubError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        with self.lock:
            if name in self.adapters and not inplace:
                raise StubError(400, f"The lora adapter '{name}' has already been loaded. If you want to load "
                                "the adapter in place, set 'load_inplace' to true.", "InvalidUserInput", "lora_name")
        directory = Path(path)
        config_file = directory / "adapter_config.json"
        if not config_file.is_file():
            raise StubError(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        config = json.loads(config_file.read_text())
        rank = max([config["r"], *(config.get("rank_pattern") or {}).values()])
        if rank > self.args.max_lora_rank:
            raise StubError(400, f"LoRA rank {rank} is greater than max_lora_rank {self.args.max_lora_rank}.",
                            "BadRequestError")
        weights = directory / "adapter_model.safetensors"
        if not weights.is_file() or not safetensors_header_ok(weights):
            raise StubError(400, f"Loading lora {name} failed: {weights} is missing or not a safetensors file",
                            "BadRequestError")
        time.sleep(self.args.load_delay_s)
        fingerprint = f"{name}-{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"
        with self.lock:
            self.adapters[name] = {"root": path, "fingerprint": fingerprint}
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict) -> str:
        name = body.get("lora_name")
        with self.lock:
            if name not in self.adapters:
                raise StubError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            del self.adapters[name]
        return f"Success: LoRA adapter '{name}' removed successfully."

    def chat(self, body: dict) -> dict:
        name = body.get("model")
        with self.lock:
            adapter = self.adapters.get(name)
        if adapter is None and name != self.args.base_model_name:
            raise StubError(404, f"The model `{name}` does not exist.", "NotFoundError", "model")
        root = adapter["root"] if adapter else name
        if adapter and self.args.fail_completions_for and self.args.fail_completions_for in root:
            raise StubError(500, f"engine error running adapter {root}", "InternalServerError")
        words = f"[{name}] answered by {root}".split()[: int(body.get("max_tokens") or 16)]
        prompt_words = sum(len(m.get("content", "").split()) for m in body.get("messages", []))
        return {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": name,
                "system_fingerprint": adapter["fingerprint"] if adapter else f"{name}-base",
                "choices": [{"index": 0, "finish_reason": "length",
                             "message": {"role": "assistant", "content": " ".join(words)}}],
                "usage": {"prompt_tokens": prompt_words, "completion_tokens": len(words),
                          "total_tokens": prompt_words + len(words)}}


def make_handler(stub: Stub):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self._reply(200, "", "application/json", None)
            elif self.path == "/v1/models":
                self._reply(200, stub.cards(), "application/json", None)
            elif self.path == "/stub/log":
                with stub.lock:
                    self._reply(200, list(stub.log), "application/json", None, record=False)
            else:
                self._reply(404, {"detail": "Not Found"}, "application/json", None)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw or b"{}")
            routes = {"/v1/chat/completions": stub.chat}
            if stub.runtime_updates:
                routes |= {"/v1/load_lora_adapter": stub.load, "/v1/unload_lora_adapter": stub.unload}
            route = routes.get(self.path)
            if route is None:
                self._reply(404, {"detail": "Not Found"}, "application/json", body)
                return
            try:
                answer = route(body)
            except StubError as error:
                self._reply(error.status, {"error": {"message": error.message, "type": error.err_type,
                                                     "param": error.param, "code": error.status}},
                            "application/json", body)
                return
            self._reply(200, answer, "text/plain" if isinstance(answer, str) else "application/json", body)

        def _reply(self, status, payload, content_type, body, record=True):
            if record:
                with stub.lock:
                    stub.log.append({"method": self.command, "path": self.path, "body": body, "status": status})
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="vLLM LoRA-serving stand-in (see the module docstring)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--base-model-name", default="stub-base")
    parser.add_argument("--max-lora-rank", type=int, default=16)
    parser.add_argument("--load-delay-s", type=float, default=0.0)
    parser.add_argument("--fail-completions-for", default=None, metavar="SUBSTRING")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Stub(args)))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
