"""The building game served to one local player: a page (web/) and a small JSON API over a GameSession.

    GET  /api/state                       the human's view (blocks, goal, positions, score, turn, events)
    POST /api/new    {"seed": int|null}   a new episode (the assistant's begin_episode)
    POST /api/act    {"action": {...}}    the human's action (Action.to_json's layout)
    POST /api/tick   {}                   the assistant's chance to act, if it is its turn
    POST /api/share  {}                   after the end: the episode into the content store -> {cid, size, tx_hash}

Every POST answers with the state (share: the receipt) or {"error": "<the rule, in words>"}.

Trust boundary: nothing the page sends is believed. Bodies are JSON objects of at most 16 KiB with
only the documented keys, actions pass Action.from_json and env.legal, and a refused request changes
nothing. The server binds 127.0.0.1, and because any web page the player visits may send requests to
localhost too, POSTs need `Content-Type: application/json` (a cross-site page cannot send that without
a CORS preflight, which is never granted) and the Host header must name this machine (DNS rebinding).
"""

from __future__ import annotations

import errno
import json
import socket
import threading
from collections.abc import Callable
from importlib.resources import files

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bitswarm.assist.session import AssistantLike, GameSession, Refused
from bitswarm.errors import BitswarmError

MAX_BODY = 16 * 1024  # an action is ~60 bytes; anything near this is not from the page
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WEB = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
       "/style.css": ("style.css", "text/css; charset=utf-8")}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:",  # no CDN, no inline script
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class ServeError(BitswarmError):
    """The game's server could not start (the port is taken, say); the message says what to do."""


async def _json_body(request: Request, keys: set[str]) -> dict:
    """The request's JSON object, holding only `keys` (an empty body is {}); Refused otherwise."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Refused("send the body as JSON with `Content-Type: application/json`", 415)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Refused(f"the body is {declared} bytes; at most {MAX_BODY} are accepted", 413)
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a chunked body has no declared length
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(f"the body is over {MAX_BODY} bytes; at most {MAX_BODY} are accepted", 413)
    if not body.strip():
        return {}
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise Refused(f"the body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise Refused(f"the body must be a JSON object, got {type(data).__name__}")
    if extra := set(data) - keys:
        raise Refused(f"unknown field(s) {', '.join(sorted(extra))}; this request takes "
                      f"{', '.join(sorted(keys)) or 'no fields'}")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def make_app(assistant_factory: Callable[[], AssistantLike | None] | None = None, seed: int | None = None, *,
             max_steps: int = 400, hosts: tuple[str, ...] = LOCAL_HOSTS) -> Starlette:
    """The game's app: one GameSession with the assistant `assistant_factory()` makes (None: play alone).
    `seed` is the first goal's (None: a random one); `hosts` are the Host header values accepted."""
    session = GameSession(None if assistant_factory is None else assistant_factory(), seed, max_steps)
    web = files("bitswarm.assist") / "web"
    pages = {path: (web.joinpath(name).read_bytes(), kind) for path, (name, kind) in WEB.items()}

    def page(request: Request) -> Response:
        body, kind = pages[request.url.path]
        return Response(body, media_type=kind, headers=PAGE_HEADERS)

    async def state(_: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(session.state))

    async def new(request: Request) -> JSONResponse:
        data = await _json_body(request, {"seed"})
        return JSONResponse(await run_in_threadpool(session.new, data.get("seed")))

    async def act(request: Request) -> JSONResponse:
        data = await _json_body(request, {"action"})
        if "action" not in data:
            raise Refused('the body is {"action": {"kind": ..., "x": ..., "y": ..., "z": ..., "block": ...}}')
        return JSONResponse(await run_in_threadpool(session.act, data["action"]))

    async def tick(request: Request) -> JSONResponse:
        await _json_body(request, set())
        return JSONResponse(await run_in_threadpool(session.tick))

    async def share(request: Request) -> JSONResponse:
        await _json_body(request, set())
        return JSONResponse(await run_in_threadpool(session.share))

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))

    routes = [Route(path, page, methods=["GET"]) for path in WEB]
    routes += [Route("/api/state", state, methods=["GET"]), Route("/api/new", new, methods=["POST"]),
               Route("/api/act", act, methods=["POST"]), Route("/api/tick", tick, methods=["POST"]),
               Route("/api/share", share, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={BitswarmError: refused},  # GameRuleError, Refused
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))])
    app.state.session = session
    return app


class _Server(uvicorn.Server):
    """uvicorn that says when it listens and stops when `stop` is set (checked every 0.1 s tick)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None], stop: threading.Event | None):
        super().__init__(config)
        self._on_started, self._stop = on_started, stop

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()

    async def on_tick(self, counter: int) -> bool:
        return await super().on_tick(counter) or (self._stop is not None and self._stop.is_set())


def serve(port: int = 0, host: str = "127.0.0.1",
          assistant: AssistantLike | Callable[[], AssistantLike | None] | None = None, seed: int | None = None,
          on_ready: Callable[[str], None] | None = None, *, stop: threading.Event | None = None,
          max_steps: int = 400) -> None:
    """Serve the game until Ctrl-C (or until `stop` is set). `assistant` is an assistant (anything with
    an `act` method) or a factory of one. Port 0 takes a free one; `on_ready(url)` is called, in the
    serving thread, once the server listens."""
    name = f"[{host}]" if ":" in host else host
    allowed = ("*",) if host in ("0.0.0.0", "::") else (*LOCAL_HOSTS, name)
    factory = assistant if assistant is None or not hasattr(assistant, "act") else lambda: assistant
    app = make_app(factory, seed, max_steps=max_steps, hosts=allowed)
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        hint = "is taken; choose another port (0 takes a free one)" if e.errno == errno.EADDRINUSE \
            else f"cannot be bound ({e.strerror})"
        raise ServeError(f"the game's address {host}:{port} {hint}") from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    ready = (lambda: on_ready(f"http://{name}:{bound}/")) if on_ready is not None else (lambda: None)
    try:
        _Server(config, ready, stop).run(sockets=[sock])
    finally:
        sock.close()
