"""The node's dashboard: a page served by its API (GET /), the JSON it draws, and a live stream.

The page (static/, plain HTML, CSS and JS with SVG charts drawn by hand: it works offline) reads
the routes below and GET /status, /balances, /events; GET /stream pushes each chain event the
node stores and a nudge when a snapshot or a swarm/assistant log changes, so the page redraws
only the panels that changed. Like the rest of the API, all of it is read-only.
"""

from __future__ import annotations

import json
import time
from importlib.resources import files
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from bitswarm.home import Home
from bitswarm.node.dashboard import views
from bitswarm.node.dashboard.models import AssistStats, Bisection, BlobInfo, JobTimeline, Network, SwarmCurves
from bitswarm.node.state import NodeState

STREAM_POLL_S = 0.5  # how often the stream looks for new rows; reads are cheap under WAL
FILES_EVERY = 4  # polls between looks at the swarm and assistant logs (a glob under the home)
PING_S = 15.0  # a comment line this often, so a proxy or the browser notices a dead connection
RETRY_MS = 2000  # how soon the browser's EventSource reconnects after the stream drops
ASSETS = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
CID_PATTERN = r"^(sha256:)?[0-9a-f]{64}$"


def _asset(name: str) -> str:
    return (files(__package__) / "static" / name).read_text("utf-8")


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(jsonable_encoder(data), separators=(',', ':'))}\n\n"


def install(app: FastAPI, state: NodeState, home: Home | None, responses: dict, not_found: dict) -> None:
    """Add the dashboard's routes to the node's API; `home` None shows no swarm or assistant data."""
    page = _asset("index.html")
    assets = {name: _asset(name) for name in ASSETS}
    store = None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no dashboard asset {name!r}; the page uses {', '.join(sorted(assets))}")
        return Response(assets[name], media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    @app.get("/network", response_model=Network, tags=["dashboard"])
    def network() -> dict:
        """Every node registered on chain (roles, stake, credits) and whether it is online."""
        return views.network(state)

    @app.get("/timeline", response_model=list[JobTimeline], responses=responses, tags=["dashboard"])
    def timeline(limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[dict]:
        """The newest jobs, newest first, each with the stages its chain events mark."""
        return views.timelines(state, limit)

    @app.get("/jobs/{job_id}/bisection", response_model=Bisection, responses={**responses, **not_found},
             tags=["dashboard"])
    def bisection(job_id: Annotated[int, PathParam(ge=0, le=2**63 - 1)]) -> dict:
        """The job's dispute replayed from its chain events: the range round by round, the votes, the verdict."""
        job = state.job(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id} in this node's state; GET /jobs lists the jobs it knows")
        return views.bisection(state, job)

    @app.get("/swarm", response_model=list[SwarmCurves], tags=["dashboard"])
    def swarm() -> list[dict]:
        """Each swarm peer's round reports under this node's home (the reward curves)."""
        return views.swarm(home)

    @app.get("/assist", response_model=AssistStats, tags=["dashboard"])
    def assist() -> dict:
        """Episodes shared, assistants trained and simulated play, from this node's home."""
        return views.assist(home)

    @app.get("/blobs/{cid}", response_model=BlobInfo, responses=responses, tags=["blobs"])
    def blob(cid: Annotated[str, PathParam(pattern=CID_PATTERN)]) -> dict:
        """What this node knows of a blob: whether its store holds it, its size, whether it serves it."""
        nonlocal store
        cid = cid if cid.startswith("sha256:") else "sha256:" + cid
        if store is None and home is not None and home.store.is_dir():
            from bitswarm.store import BlobStore

            store = BlobStore(home.store)
        served = next((b for b in state.blobs() if b["cid"] == cid), None)
        held = store is not None and store.has(cid)
        return {"cid": cid, "in_store": held, "size": store.size(cid) if held else None, "served": served is not None,
                "what": served and served["what"], "job_id": served and served["job_id"]}

    @app.get("/stream", include_in_schema=False)
    async def stream(request: Request, after: Annotated[int | None, Query(ge=0)] = None) -> StreamingResponse:
        """Server-sent events: `chain` (one stored chain event, its id as the SSE id), `snapshot`
        (keys whose snapshot changed) and `logs` (a swarm or assistant log grew)."""
        # A browser reconnecting on its own sends the last id it got, fresher than the URL's `after`.
        resume = request.headers.get("last-event-id", "")
        if resume.isdigit():
            after = int(resume)
        return StreamingResponse(_events(request, after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(request: Request, after: int | None):
        def newest() -> int:
            return state.query("SELECT COALESCE(MAX(id), 0) AS id FROM events")[0]["id"]

        def stamps() -> dict:
            return {r["key"]: r["updated"] for r in state.query("SELECT key, updated FROM snapshot")}

        last = after if after is not None else await run_in_threadpool(newest)
        snaps = await run_in_threadpool(stamps)
        logs = await run_in_threadpool(views.file_stamp, home)
        yield f"retry: {RETRY_MS}\n\n" + _sse("hello", {"after": last, "time": time.time()})
        polls, pinged = 0, time.monotonic()
        # ApiServer.stop() sets `closing`: the stream ends within one poll, so shutdown never waits on it.
        while not app.state.closing.is_set() and not await request.is_disconnected():
            rows = await run_in_threadpool(state.events, last, None, 200)
            for row in rows:
                last = row["id"]
                yield _sse("chain", row, row["id"])
            now = await run_in_threadpool(stamps)
            changed = sorted(k for k, v in now.items() if snaps.get(k) != v)
            if changed:
                snaps = now
                yield _sse("snapshot", {"keys": changed})
            polls += 1
            if polls % FILES_EVERY == 0:
                grown = await run_in_threadpool(views.file_stamp, home)
                if grown != logs:
                    logs = grown
                    yield _sse("logs", {"time": time.time()})
            if time.monotonic() - pinged > PING_S:
                pinged = time.monotonic()
                yield ": ping\n\n"
            if not rows or len(rows) < 200:
                await anyio.sleep(STREAM_POLL_S)
