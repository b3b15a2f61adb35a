"""The embedded default serving server: approved LoRA adapters merged into the base model, behind the
part of vLLM's OpenAI-compatible API that the platform uses, as a real process on loopback.

    srl serve --base-model smollm2-135m-instruct --port 8000 --adapter gold=DIR [--adapter silver=DIR]

The clients and `srl_platform.serving_backends` talk to it exactly as they talk to a vLLM server
started with `--enable-lora` (and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`):

- `GET /health`: 200 once the base model and every `--adapter` are loaded.
- `GET /v1/models`: the base model (id = `--base-model`, root = its directory) and one card per
  adapter (id = the served name, root = the adapter directory, parent = the base model).
- `POST /v1/chat/completions`: OpenAI's request and answer shape; `model` is a served name. The
  answer's `system_fingerprint` is `{name}-{first 12 hex of the adapter weights' sha256}` (the base
  model's is `{name}-base`), so a caller can tell which adapter version answered.
- `POST /v1/load_lora_adapter` {lora_name, lora_path, load_inplace?} and `POST
  /v1/unload_lora_adapter` {lora_name}: vLLM's status codes, messages and error body
  (`{"error": {"message", "type", "param", "code"}}`): 400 when the name is already loaded and
  `load_inplace` is not true, 404 for an unknown name on unload or a path without an adapter, 400 for
  a rank above `--max-lora-rank` or weights that do not load.

Each adapter is merged into its own copy of the base model (`evaluate.load_policy_model`), so a
request costs what the base model costs. A load builds the new merged model completely (and runs one
forward pass on it) before the name is pointed at it, in one assignment under a lock: a request holds
the model object it resolved for its whole generation, so in-flight requests finish on the version
they started with, and a load that fails at any point leaves the previous adapter serving. Generation
is serialized by a lock (one CPU's worth of compute either way): requests queue, none is dropped. On
SIGTERM the server stops accepting connections and waits for the requests it has accepted.

Routing: with `--router ROUTER_JSON` (`serving/router.json` from the `router_settings` asset, a path
or s3:// URI, re-read when it changes), a request for `model: "router"` is sent to the cheapest served
tier expected to clear its target (`srl_platform.router`). It names its `task_family` (and may give
`difficulty`, `target` and, for a cascade, the `reference_answer` the verifier checks); the answer's
`model` is the tier that answered and `srl_router` the decision with every candidate's expected
quality and cost.

Telemetry (`srl_platform.serving_telemetry`): `--serving-logs` writes one collector-format row per
answered request (where `serving_logs_sensor` reads: `$SRL_SERVING_LOGS`), `--metrics` sends
serving and router metrics to the local metrics store or CloudWatch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from srl_platform.serving_telemetry import UNKNOWN_TIER, ServingTelemetry, log_row
from srl_platform.tiers import ADAPTER_WEIGHTS

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_INFO = "srl_adapter.json"
"""Written next to an adapter by `served_adapters`: {"tier", "version" ("v3"), "data_version"}."""
ROUTER_MODEL = "router"
"""The served name of routed requests (with `--router`)."""
ROUTER_REFRESH_S = 30.0
"""How often an s3:// router table is re-read (a local one is re-read when its file changes)."""
DEFAULT_MAX_TOKENS = 256
ROLES = ("system", "user", "assistant")


class ApiError(Exception):
    """An error answer: HTTP status, vLLM's error type, and the request field at fault (if any)."""

    def __init__(self, status: HTTPStatus, message: str, err_type: str = "BadRequestError",
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.err_type, "param": self.param,
                          "code": int(self.status)}}


def bad_field(field: str, message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, f"field {field!r} {message}", "InvalidUserInput", field)


@dataclass(frozen=True)
class ServedModel:
    """What one served name resolves to."""

    name: str
    root: str
    """The adapter directory (the base model's directory for the base model)."""
    parent: str | None
    """The base model's served name for an adapter; None for the base model."""
    fingerprint: str
    """`system_fingerprint` of every answer from this model."""
    version: str
    """The serving logs' `adapter_version`: `srl_adapter.json`'s version ("v3"), else the fingerprint."""
    model: Any
    """A transformers model with the adapter merged in; never modified after it is served."""
    created: int


def adapter_rank(directory: Path) -> int:
    """The highest LoRA rank in `directory/adapter_config.json` (`r`, and any `rank_pattern` value).

    Raises ValueError naming the file and field when the config is missing or malformed."""
    config_file = directory / ADAPTER_CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"No adapter found for {directory}: {config_file} does not exist")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from None
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        raise ValueError(f"{config_file}: field 'r' (and rank_pattern values) must be positive integers, "
                         f"got r={config.get('r')!r}, rank_pattern={config.get('rank_pattern')!r}")
    return max(ranks)


def weights_fingerprint(name: str, directory: Path) -> str:
    digest = hashlib.sha256((directory / ADAPTER_WEIGHTS).read_bytes()).hexdigest()
    return f"{name}-{digest[:12]}"


def adapter_version(directory: Path, fingerprint: str) -> str:
    """The version `served_adapters` recorded in `directory/srl_adapter.json`, else `fingerprint`."""
    try:
        version = json.loads((directory / ADAPTER_INFO).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return fingerprint
    return version if isinstance(version, str) and version.strip() else fingerprint


class RouterSource:
    """The router table a `--router` path or s3:// URI holds, re-read when it changes; a table that
    no longer parses is reported and the previous one keeps routing."""

    def __init__(self, uri: str) -> None:
        from srl_platform.router import Router

        self.uri, self._parse = uri, Router.from_json
        self._stamp, self._checked = None, 0.0
        self._lock = threading.Lock()
        self.router = self._parse(self._read())  # at start-up a bad table is an error, not a warning
        self._stamp = self._version()

    def _read(self) -> bytes:
        if self.uri.startswith("s3://"):
            bucket, _, key = self.uri[len("s3://"):].partition("/")
            return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(self.uri).read_bytes()

    def _version(self):
        if self.uri.startswith("s3://"):
            bucket, _, key = self.uri[len("s3://"):].partition("/")
            return _s3().head_object(Bucket=bucket, Key=key)["ETag"]
        status = Path(self.uri).stat()
        return status.st_mtime_ns, status.st_size

    def get(self):
        with self._lock:
            now = time.monotonic()
            if self.uri.startswith("s3://") and now - self._checked < ROUTER_REFRESH_S:
                return self.router
            self._checked = now
            try:
                stamp = self._version()
                if stamp != self._stamp:
                    self.router, self._stamp = self._parse(self._read()), stamp
                    _log(f"reloaded the router table from {self.uri}")
            except Exception as error:
                _log(f"warning: reloading the router table from {self.uri} failed, routing with the previous "
                     f"one: {type(error).__name__}: {error}")
            return self.router


def _s3():
    import boto3  # AWS settings (credentials, region, AWS_ENDPOINT_URL) from the environment

    return boto3.client("s3")


class ModelTable:
    """The served names, their models, and the locks that make a swap atomic."""

    def __init__(self, base_model: str, dtype: str, max_lora_rank: int, router: RouterSource | None = None,
                 telemetry: ServingTelemetry | None = None):
        from transformers.utils import logging as transformers_logging

        from srl_platform.evaluate import load_policy_model
        from srl_platform.models import resolve_base_model

        transformers_logging.disable_progress_bar()  # one "Loading weights" bar per load in the log
        if max_lora_rank < 1:
            raise ValueError(f"--max-lora-rank must be >= 1, got {max_lora_rank}")
        self.base_name = base_model
        self.base_dir = resolve_base_model(base_model)
        self.dtype = dtype
        self.max_lora_rank = max_lora_rank
        self.router, self.telemetry = router, telemetry or ServingTelemetry()
        self.tokenizer, model = load_policy_model(str(self.base_dir), None, dtype)
        self._models = {base_model: ServedModel(base_model, str(self.base_dir), None, f"{base_model}-base",
                                                "base", model, int(time.time()))}
        self._names = threading.Lock()  # guards _models: held for lookups and the swap only
        self._loading = threading.Lock()  # one load/unload at a time: bounded memory, no racing loads
        self._generating = threading.Lock()

    def get(self, name: str) -> ServedModel:
        with self._names:
            served = self._models.get(name)
        if served is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"The model `{name}` does not exist.", "NotFoundError", "model")
        return served

    def cards(self) -> list[dict]:
        with self._names:
            served = list(self._models.values())
        return [{"id": s.name, "object": "model", "created": s.created, "owned_by": "srl-platform",
                 "root": s.root, "parent": s.parent,
                 **({"max_model_len": s.model.config.max_position_embeddings} if s.parent is None else {})}
                for s in served]

    def load(self, body: dict) -> str:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise ApiError(HTTPStatus.BAD_REQUEST, "Both 'lora_name' and 'lora_path' must be provided.",
                           "InvalidUserInput")
        load_inplace = body.get("load_inplace", False)
        if not isinstance(load_inplace, bool):
            raise bad_field("load_inplace", f"must be true or false, got {load_inplace!r}")
        if name in (self.base_name, ROUTER_MODEL):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"The lora adapter name '{name}' conflicts with a served "
                           f"{'base model' if name == self.base_name else 'router'} name.", "InvalidUserInput",
                           "lora_name")
        with self._loading:
            with self._names:
                loaded = name in self._models
            if loaded and not load_inplace:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"The lora adapter '{name}' has already been loaded. If "
                               "you want to load the adapter in place, set 'load_inplace' to true.",
                               "InvalidUserInput", "lora_name")
            served = self._build(name, Path(path))
            with self._names:
                self._models[name] = served  # the swap: requests that resolved the old model keep it
        _log(f"loaded LoRA adapter {name!r} from {path} ({served.fingerprint})")
        return f"Success: LoRA adapter '{name}' added successfully."

    def _build(self, name: str, directory: Path) -> ServedModel:
        import torch

        from srl_platform.evaluate import load_policy_model

        try:
            rank = adapter_rank(directory)
        except FileNotFoundError as error:
            raise ApiError(HTTPStatus.NOT_FOUND, f"Loading lora {name} failed: {error}", "NotFoundError",
                           "lora_path") from None
        except ValueError as error:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"Loading lora {name} failed: {error}",
                           param="lora_path") from None
        if rank > self.max_lora_rank:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"LoRA rank {rank} of {directory} is greater than "
                           f"max_lora_rank {self.max_lora_rank}.", param="lora_path")
        if not (directory / ADAPTER_WEIGHTS).is_file():
            raise ApiError(HTTPStatus.NOT_FOUND, f"Loading lora {name} failed: No adapter found for "
                           f"{directory}: {ADAPTER_WEIGHTS} does not exist", "NotFoundError", "lora_path")
        try:
            _, model = load_policy_model(str(self.base_dir), str(directory), self.dtype)
            probe = torch.tensor([[self.tokenizer.bos_token_id or 0]])
            with torch.inference_mode():
                logits = model(input_ids=probe).logits
            if not torch.isfinite(logits).all():
                raise ValueError("the merged model produces non-finite logits")
        except Exception as error:  # corrupt or mismatched weights: the previous adapter keeps serving
            raise ApiError(HTTPStatus.BAD_REQUEST, f"Loading lora {name} from {directory} failed: "
                           f"{type(error).__name__}: {error}", param="lora_path") from None
        fingerprint = weights_fingerprint(name, directory)
        return ServedModel(name, str(directory), self.base_name, fingerprint, adapter_version(directory, fingerprint),
                           model, int(time.time()))

    def unload(self, body: dict) -> str:
        name = body.get("lora_name")
        if not isinstance(name, str) or not name:
            raise ApiError(HTTPStatus.BAD_REQUEST, "'lora_name' needs to be provided to unload a LoRA adapter.",
                           "InvalidUserInput", "lora_name")
        with self._loading, self._names:
            if name == self.base_name or name not in self._models:
                raise ApiError(HTTPStatus.NOT_FOUND, f"The lora adapter '{name}' cannot be found.",
                               "NotFoundError", "lora_name")
            del self._models[name]  # in-flight requests hold their reference and finish
        _log(f"unloaded LoRA adapter {name!r}")
        return f"Success: LoRA adapter '{name}' removed successfully."

    def chat(self, body: dict) -> dict:
        """Answer a chat completion (routed when `model` is "router"), and record it."""
        started = time.monotonic()
        name = body.get("model")
        try:
            if not isinstance(name, str) or not name:
                raise bad_field("model", f"must be the name of a served model, got {name!r}")
            messages = _messages(body.get("messages"))
            sampling = _sampling(body)
            if name == ROUTER_MODEL:
                answer, tried, versions, decision = self._route(body, messages, sampling)
            else:
                served = self.get(name)  # resolved once: a swap during generation does not change it
                answer = self._generate(served, messages, sampling)
                tried = {name: ((time.monotonic() - started) * 1000, answer["usage"]["total_tokens"])}
                versions, decision = {name: served.version}, None
        except Exception:
            with self._names:
                known = isinstance(name, str) and (name in self._models or name == ROUTER_MODEL)
            self.telemetry.failed(name if known else UNKNOWN_TIER, (time.monotonic() - started) * 1000)
            raise
        if self.telemetry.enabled:
            row = log_row(_last_user(messages), answer, versions[answer["model"]],
                          (time.monotonic() - started) * 1000, body)
            if decision is not None:
                row.update(escalated=decision.escalated, attempts=[a.tier for a in decision.attempts])
            self.telemetry.answered(row, tried, decision)
        return answer

    def _route(self, body: dict, messages: list[dict], sampling: tuple):
        """The router's decision for a request and the answer of the tier it chose."""
        from dataclasses import replace

        from srl_platform.router import Router, verifier
        from srl_platform.tasks import FAMILY_NAMES

        if self.router is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"The model `{ROUTER_MODEL}` does not exist: start srl serve "
                           "with --router ROUTER_JSON to route requests.", "NotFoundError", "model")
        family, difficulty = body.get("task_family"), body.get("difficulty")
        target, reference = body.get("target"), body.get("reference_answer")
        if family not in FAMILY_NAMES:
            raise bad_field("task_family", f"must be one of {', '.join(FAMILY_NAMES)} to route a request, "
                            f"got {family!r}")
        if difficulty is not None and (not isinstance(difficulty, str | int) or isinstance(difficulty, bool)):
            raise bad_field("difficulty", f"must be a string, an integer or null, got {difficulty!r}")
        if reference is not None and not isinstance(reference, str):
            raise bad_field("reference_answer", f"must be a string or null, got {reference!r}")
        routing = self.router.get()
        if routing.settings.cascade and reference is None:
            raise bad_field("reference_answer", "is required: the router cascades (tries the cheapest tier and "
                            "escalates when the verifier rejects its answer), which needs the answer to check")
        with self._names:
            loaded = set(self._models)
        try:
            router = Router(routing.table, replace(routing.settings,
                                                   tiers=tuple(t for t in routing.settings.tiers if t in loaded)))
        except ValueError as error:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"no tier to route to on this server: {error}",
                           "ServiceUnavailableError", "model") from None
        answers, tried, versions = {}, {}, {}

        def solve(tier: str) -> str:
            started = time.monotonic()
            served = self.get(tier)
            answers[tier] = self._generate(served, messages, sampling)
            tried[tier] = ((time.monotonic() - started) * 1000, answers[tier]["usage"]["total_tokens"])
            versions[tier] = served.version
            return answers[tier]["choices"][0]["message"]["content"]

        try:
            decision = router.answer(family, solve, verifier(family, reference) if reference is not None else None,
                                     difficulty, target)
        except ValueError as error:  # the one left: a target outside the metric's range
            raise bad_field("target", str(error)) from None
        answer = answers[decision.tier]
        answer["srl_router"] = {k: v for k, v in decision.as_dict().items() if k != "answer"}
        return answer, tried, versions, decision

    def _generate(self, served: ServedModel, messages: list[dict], sampling: tuple) -> dict:
        import torch

        from srl_platform.prompts import render

        max_tokens, temperature, top_p, seed = sampling
        name = served.name
        prompt = render(self.tokenizer, messages)
        options = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 \
            else {"do_sample": False}
        # One lock for tokenizing too: a fast tokenizer used from two threads at once can fail
        # ("Already borrowed").
        with self._generating, torch.inference_mode():
            input_ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
            limit = served.model.config.max_position_embeddings
            if input_ids.shape[1] + max_tokens > limit:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"This model's maximum context length is {limit} tokens. "
                               f"However, you requested {input_ids.shape[1] + max_tokens} tokens "
                               f"({input_ids.shape[1]} in the messages, {max_tokens} in the completion).",
                               param="max_tokens")
            if seed is not None:
                torch.manual_seed(seed)
            output = served.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                           max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                           **options)
            new = output[0, input_ids.shape[1]:].tolist()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
        eos = served.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        finish = "stop" if new and new[-1] in eos_ids else "length"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": name, "system_fingerprint": served.fingerprint,
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": input_ids.shape[1], "completion_tokens": len(new),
                      "total_tokens": input_ids.shape[1] + len(new)},
        }


def _last_user(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise bad_field("messages", f"must be a non-empty list of {{role, content}}, got {messages!r}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise bad_field(f"messages[{index}]", f"must be {{'role': 'system'|'user'|'assistant', "
                            f"'content': str}}, got {message!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _number(body: dict, field: str, default, low: float, high: float | None = None, *, integer=False,
            low_open=False):
    value = body.get(field, default)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    in_range = isinstance(value, kinds) and not isinstance(value, bool) and \
        (value > low if low_open else value >= low) and (high is None or value <= high)
    if not in_range:
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise bad_field(field, f"must be {'an integer' if integer else 'a number'} {bounds}, got {value!r}")
    return value


def _sampling(body: dict) -> tuple[int, float, float, int | None]:
    if body.get("stream"):
        raise bad_field("stream", "must be false: this server answers whole completions only")
    if body.get("n", 1) != 1:
        raise bad_field("n", f"must be 1 (one choice per request), got {body.get('n')!r}")
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, field, DEFAULT_MAX_TOKENS, 1, integer=True)
    temperature = float(_number(body, "temperature", 1.0, 0))
    top_p = float(_number(body, "top_p", 1.0, 0, 1, low_open=True))
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad_field("seed", f"must be an integer or null, got {seed!r}")
    return max_tokens, temperature, top_p, seed


def _log(message: str) -> None:
    print(f"srl serve: {message}", file=sys.stderr, flush=True)


def make_handler(table: ModelTable):
    routes = {("POST", "/v1/chat/completions"): table.chat, ("POST", "/v1/load_lora_adapter"): table.load,
              ("POST", "/v1/unload_lora_adapter"): table.unload}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self._send(HTTPStatus.OK, b"", "application/json")
            elif self.path == "/v1/models":
                self._json(HTTPStatus.OK, {"object": "list", "data": table.cards()})
            else:
                self._json(HTTPStatus.NOT_FOUND, ApiError(HTTPStatus.NOT_FOUND, f"no route GET {self.path}",
                                                          "NotFoundError").body())

        def do_POST(self):
            route = routes.get(("POST", self.path))
            try:
                if route is None:
                    raise ApiError(HTTPStatus.NOT_FOUND, f"no route POST {self.path}", "NotFoundError")
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError as error:
                    raise ApiError(HTTPStatus.BAD_REQUEST, f"request body is not valid JSON: {error}",
                                   "InvalidUserInput") from None
                if not isinstance(body, dict):
                    raise ApiError(HTTPStatus.BAD_REQUEST, f"request body must be a JSON object, got "
                                   f"{type(body).__name__}", "InvalidUserInput")
                answer = route(body)
            except ApiError as error:
                self._json(error.status, error.body())
                return
            except Exception as error:  # a bug must answer 500, not drop the connection
                _log(f"internal error on POST {self.path}: {type(error).__name__}: {error}")
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, ApiError(
                    HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}", "InternalServerError").body())
                return
            if isinstance(answer, str):  # vLLM answers load/unload with plain text
                self._send(HTTPStatus.OK, answer.encode(), "text/plain; charset=utf-8")
            else:
                self._json(HTTPStatus.OK, answer)

        def _json(self, status: HTTPStatus, body: dict) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: HTTPStatus, payload: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client left; nothing to answer

        def log_message(self, *args):
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for accepted requests: a stop drops none


def parse_adapter(value: str) -> tuple[str, str]:
    name, sep, directory = value.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"--adapter must be NAME=DIR, got {value!r}")
    return name, directory


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m srl_platform.serving_server",
                                               description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", required=True, help="catalogue name or model directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--max-lora-rank", type=int, default=16,
                        help="largest adapter rank accepted (vLLM's flag; its default is 16)")
    parser.add_argument("--adapter", action="append", type=parse_adapter, default=[], metavar="NAME=DIR",
                        help="an adapter served under NAME from the start (repeatable)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32", "float16"], default="bfloat16")
    parser.add_argument("--router", metavar="ROUTER_JSON",
                        help="route requests for model \"router\" with this table (router_settings' "
                             "serving/router.json: a path or s3:// URI, re-read when it changes)")
    parser.add_argument("--serving-logs", metavar="DIR_OR_S3",
                        help="write a serving-log row per answered request here (a folder or s3://bucket/prefix; "
                             "serving_logs_sensor collects from $SRL_SERVING_LOGS)")
    parser.add_argument("--metrics", metavar="STORE|cloudwatch[:NAMESPACE]",
                        help="send serving and router metrics to an artefact store's metrics/ (a folder or "
                             "s3://bucket/prefix: $SRL_ARTIFACT_ROOT) or to CloudWatch (default namespace "
                             "srl-platform)")
    return parser


def telemetry_from_args(args) -> ServingTelemetry:
    """The serving logs and metrics sink `--serving-logs` and `--metrics` name."""
    from srl_platform.monitoring import CloudWatchMetricsSink, LocalMetricsSink
    from srl_platform.storage import open_store

    logs = open_store(args.serving_logs) if args.serving_logs else None
    sink = None
    if args.metrics and args.metrics.split(":", 1)[0] == "cloudwatch":
        import boto3

        namespace = args.metrics.partition(":")[2] or "srl-platform"
        sink = CloudWatchMetricsSink(boto3.client("cloudwatch"), namespace)
    elif args.metrics:
        sink = LocalMetricsSink(open_store(args.metrics))
    return ServingTelemetry(logs, sink)


def serve(args) -> int:
    from srl_platform.models import ModelNotFoundError

    try:
        router = RouterSource(args.router) if args.router else None
        telemetry = telemetry_from_args(args)
        table = ModelTable(args.base_model, args.dtype, args.max_lora_rank, router, telemetry)
        for name, directory in args.adapter:
            table.load({"lora_name": name, "lora_path": directory})
    except (ApiError, ModelNotFoundError, ValueError, OSError) as error:
        _log(f"error: {getattr(error, 'message', error)}")
        return 2
    telemetry.start()
    httpd = _Server((args.host, args.port), make_handler(table))
    host, port = httpd.server_address[:2]
    # shutdown() waits for serve_forever() to return, so it must run off the thread that serves.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(f"srl serve: listening on http://{host}:{port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        telemetry.close()
    _log("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
