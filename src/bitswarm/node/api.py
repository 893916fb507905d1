"""The node's HTTP API: a thin FastAPI app over the node's SQLite state (node.state).

Trust boundary: the API holds no key and never talks to the chain. It reads what the node's loop
wrote (jobs, decisions, events, disputes, snapshots) and queues anything that changes the world as
a row in the `requests` table, which the loop executes and finishes. A stolen API token can
therefore ask the node to spend its credits, but never read its key; reads need no token because
the server binds 127.0.0.1 unless told otherwise. GET / is the dashboard (node.dashboard), a page
over these reads and a live stream of them.

Request kinds queued here (the node's loop implements them; a failure is finished with
`{"error": "<message a person can read>"}`). CIDs travel in the store's form, "sha256:<64 hex>":
  submit_job  {spec_cid, kind, bounty, stake, window, verify_fee}  -> result {"job_id": ..., ...}
  announce    {cid}     tell peers this node serves the blob
  fetch       {cid}     get the blob from peers into this node's store
"""

from __future__ import annotations

import errno
import hmac
import os
import secrets
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import bitswarm
from bitswarm.errors import BitswarmError
from bitswarm.home import Home
from bitswarm.node.dashboard import install as install_dashboard
from bitswarm.node.state import NodeState
from bitswarm.store.atomic import fsync_dir, temp_name
from bitswarm.store.cid import PREFIX as CID_PREFIX

SQL_INT_MAX = 2**63 - 1  # SQLite's INTEGER; a larger id cannot name a row, and would overflow the driver
UINT256_MAX = 2**256 - 1
MAX_WAIT_S = 120
POLL_S = 0.05  # how often a waiting POST looks at its request row; reads are cheap under WAL
# JobMarket events that belong to a job's dispute, shown beside its bisection path.
DISPUTE_EVENTS = ("JobChallenged", "DisputeQuery", "StepAnswered", "StepFound", "TraceCommitted", "OpAnswered",
                  "OpFound", "RefereeVoted", "VoteExtended", "VoteReleased", "DisputeSettled")
CID_PATTERN = r"^(sha256:)?[0-9a-f]{64}$"
CID_HELP = "a store CID: 'sha256:' and 64 lowercase hex digits (the bare digest is accepted too)"


def _full_cid(text: str) -> str:
    return text if text.startswith(CID_PREFIX) else CID_PREFIX + text


Cid = Annotated[str, Field(pattern=CID_PATTERN, description=CID_HELP), AfterValidator(_full_cid)]
CidPath = Annotated[str, PathParam(pattern=CID_PATTERN, description=CID_HELP)]
RowId = Annotated[int, PathParam(ge=0, le=SQL_INT_MAX)]
Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for the node to finish it")]


class ApiError(BitswarmError):
    """The API cannot start or be used: an unsafe token file, a port that is taken."""


# -- wire models: one schema per body, so the OpenAPI document is exact -----------------------------

class ErrorBody(BaseModel):
    error: str


class ValidationErrorBody(BaseModel):
    error: str = Field(description="every problem, one per `; `, as `where: what`")
    detail: list[dict[str, Any]]


class Status(BaseModel):
    model_config = ConfigDict(extra="allow")  # the node may report more than this API knows of
    state: str = Field("starting", description="starting until the node's loop writes its first snapshot")
    version: str = bitswarm.__version__
    address: str | None = None
    peer_id: str | None = None
    roles: list[str] = []
    chain_id: int | None = None
    block: int | None = Field(None, description="the chain's head as the node last saw it")
    last_block: int = Field(-1, description="the last block whose events the node applied (-1: none yet)")
    uptime_s: float | None = Field(None, description="seconds since the node started")
    api_url: str | None = None
    maddrs: list[str] = Field([], description="libp2p addresses peers reach this node at")


class Peer(BaseModel):
    model_config = ConfigDict(extra="allow")
    peer_id: str
    maddrs: list[str] = []


class Balances(BaseModel):
    model_config = ConfigDict(extra="allow")
    address: str | None = None
    token: int | None = Field(None, description="credits held, in token units (18 decimals)")
    stake: int | None = Field(None, description="stake in the node registry, token units")
    locked: int | None = Field(None, description="stake locked by claimed jobs and votes, token units")
    unbonding: int | None = Field(None, description="stake on its way out of the registry, token units")
    eth: int | None = Field(None, description="gas money, wei")


class Job(BaseModel):
    job_id: int
    kind: str | None = None
    spec_cid: str | None = None
    poster: str | None = None
    bounty: int | None = None
    solver_stake: int | None = None
    verify_fee: int | None = None
    challenge_window: int | None = None
    num_leaves: int | None = None
    ops_per_leaf: int | None = None
    status: str
    solver: str | None = None
    result_cid: str | None = None
    result_root: str | None = None
    challenger: str | None = None
    winner: str | None = None
    role: str | None = Field(None, description="what this node is to the job")
    local: str | None = Field(None, description="what this node last did with it, in words")
    error: str | None = None
    posted: float | None = None
    updated: float


class Decision(BaseModel):
    id: int
    job_id: int
    action: str
    args: dict[str, Any]
    state: Literal["decided", "sent", "done", "failed"]
    tx_hash: str | None = None
    error: str | None = None
    created: float
    updated: float


class Event(BaseModel):
    id: int
    block: int
    log_index: int
    contract: str
    name: str
    job_id: int | None = None
    args: dict[str, Any]
    seen: float


class DisputeRound(BaseModel):
    job_id: int
    round: int
    phase: str
    idx: int | None = None
    lo: int | None = None
    hi: int | None = None
    solver_answer: str | None = None
    challenger_answer: str | None = None
    block: int | None = None


class JobDetail(BaseModel):
    job: Job
    decisions: list[Decision]
    events: list[Event]


class Dispute(BaseModel):
    job_id: int
    path: list[DisputeRound] = Field(description="the bisection path, one row per answered round")
    events: list[Event]


class Blob(BaseModel):
    cid: str
    what: str
    job_id: int | None = None
    added: float


class RequestRow(BaseModel):
    id: int
    kind: str
    body: dict[str, Any]
    state: Literal["pending", "done", "failed"]
    result: Any = None
    created: float
    updated: float


class Queued(BaseModel):
    request_id: int
    state: Literal["pending", "done"]
    result: Any = None


class JobSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec_cid: Cid = Field(description="the job spec's CID in the store")
    kind: Literal["train", "infer", "eval"]
    bounty: int = Field(gt=0, le=UINT256_MAX, description="paid to the solver, in token units")
    stake: int = Field(ge=0, le=UINT256_MAX, description="stake a solver must lock to claim, token units")
    window: int = Field(ge=1, le=2_592_000, description="challenge window in seconds (at most 30 days)")
    verify_fee: int = Field(0, ge=0, description="paid out of the bounty to verifiers, token units")

    @model_validator(mode="after")
    def _fee_below_bounty(self) -> "JobSubmission":
        if self.verify_fee >= self.bounty:
            raise ValueError(f"verify_fee ({self.verify_fee}) must be less than bounty ({self.bounty})")
        return self


# -- errors: every failure is {"error": ...}, mapped here and nowhere else -------------------------

def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BitswarmError)
    async def _bitswarm(_: Request, exc: BitswarmError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        message = "; ".join(f"{_where(tuple(e['loc']))}: {e['msg']}" for e in detail) or "invalid request"
        return JSONResponse({"error": message, "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(sqlite3.OperationalError)
    async def _busy(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # The loop holds the write lock longer than SQLite's 30 s timeout: a stalled node, not bad input.
        return JSONResponse({"error": f"the node's database is busy ({exc}); try again"}, status_code=503)


READ = {422: {"model": ValidationErrorBody, "description": "a parameter is invalid"}}
PENDING = "queued; the node has not finished it yet (poll GET /requests/{id})"
WRITE = {**READ, 400: {"model": ErrorBody}, 401: {"model": ErrorBody, "description": "no or wrong API token"}}


# -- the app ---------------------------------------------------------------------------------------

def create_app(state: NodeState, token: str, home: Home | None = None) -> FastAPI:
    """The API over `state`; mutating routes need `Authorization: Bearer <token>`. With the node's
    `home`, the dashboard (GET /) also shows the swarm's and the assistant's logs kept there."""
    app = FastAPI(title="bitswarm node", version=bitswarm.__version__,
                  description="Read a bitswarm node's state; ask it to post jobs and to announce or fetch blobs.",
                  generate_unique_id_function=lambda route: route.name)  # operationIds: status, submit_job, …
    _install_error_handlers(app)
    app.state.closing = threading.Event()  # set by ApiServer.stop(): waiting POSTs answer at once
    bearer = HTTPBearer(auto_error=False, description="the token in <home>/api.token")
    expected = token.encode()

    def authorized(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), expected):
            reason = "missing" if creds is None else "wrong"
            raise HTTPException(401, f"{reason} API token: send `Authorization: Bearer <token>` with the token "
                                     "from the node's api.token file", headers={"WWW-Authenticate": "Bearer"})

    def job_or_404(job_id: int) -> dict:
        job = state.job(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id} in this node's state; GET /jobs lists the jobs it knows")
        return job

    async def queue(kind: str, body: dict, wait: float, response: Response) -> Queued:
        """Queue a request; if `wait`, poll its row until the loop finishes it or the wait ends."""
        rid = await run_in_threadpool(state.add_request, kind, body)
        deadline = time.monotonic() + wait
        while True:
            row = await run_in_threadpool(state.request, rid)
            if row["state"] == "failed":
                result = row["result"]
                message = result.get("error") if isinstance(result, dict) else None
                raise HTTPException(409, f"request {rid} ({kind}) failed: {message or result}")
            if row["state"] == "done":
                response.status_code = 201
                return Queued(request_id=rid, state="done", result=row["result"])
            if time.monotonic() >= deadline or app.state.closing.is_set():
                return Queued(request_id=rid, state="pending")
            await anyio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    @app.get("/status", response_model=Status, tags=["node"])
    def status() -> dict:
        snap = state.snapshot("status") or {}
        started = state.get_meta("started")  # fresher than the snapshot's uptime, which the loop writes every few s
        fresh = {"uptime_s": round(time.time() - float(started), 1)} if started else {}
        return {**snap, **fresh, "last_block": state.last_block}

    @app.get("/peers", response_model=list[Peer], tags=["node"])
    def peers() -> list[dict]:
        return state.snapshot("peers") or []

    @app.get("/balances", response_model=Balances, tags=["node"])
    def balances() -> dict:
        return state.snapshot("balances") or {}

    @app.get("/jobs", response_model=list[Job], responses=READ, tags=["jobs"])
    def jobs(role: Literal["solver", "verifier", "referee", "poster"] | None = None,
             limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict]:
        return state.jobs(role=role, limit=limit)

    @app.get("/jobs/{job_id}", response_model=JobDetail, responses={**READ, 404: {"model": ErrorBody}}, tags=["jobs"])
    def job(job_id: RowId) -> dict:
        return {"job": job_or_404(job_id), "decisions": state.decisions(job_id=job_id),
                "events": state.events(job_id=job_id, limit=10_000)}

    @app.get("/jobs/{job_id}/dispute", response_model=Dispute, responses={**READ, 404: {"model": ErrorBody}},
             tags=["jobs"])
    def dispute(job_id: RowId) -> dict:
        path = state.dispute_path(job_id)
        if not path:
            job_or_404(job_id)
        events = [e for e in state.events(job_id=job_id, limit=10_000) if e["name"] in DISPUTE_EVENTS]
        return {"job_id": job_id, "path": path, "events": events}

    @app.post("/jobs", status_code=202, response_model=Queued, tags=["jobs"], response_description=PENDING,
              responses={**WRITE, 201: {"model": Queued, "description": "the node posted it"},
                         409: {"model": ErrorBody, "description": "the node tried and failed"}},
              dependencies=[Depends(authorized)])
    async def submit_job(submission: JobSubmission, response: Response, wait: Wait = 0) -> Queued:
        """Ask the node to post a job on chain (from its own account); 202 while it is pending."""
        return await queue("submit_job", submission.model_dump(), wait, response)

    @app.get("/blobs", response_model=list[Blob], tags=["blobs"])
    def blobs() -> list[dict]:
        return state.blobs()

    blob_answers = {**WRITE, 201: {"model": Queued, "description": "the node did it"},
                    409: {"model": ErrorBody, "description": "the node tried and failed"}}

    @app.post("/blobs/{cid}/announce", status_code=202, response_model=Queued, tags=["blobs"],
              response_description=PENDING, responses=blob_answers, dependencies=[Depends(authorized)])
    async def announce(cid: CidPath, response: Response, wait: Wait = 0) -> Queued:
        """Ask the node to tell its peers it serves this blob (it must be in the node's store)."""
        return await queue("announce", {"cid": _full_cid(cid)}, wait, response)

    @app.post("/blobs/{cid}/fetch", status_code=202, response_model=Queued, tags=["blobs"],
              response_description=PENDING, responses=blob_answers, dependencies=[Depends(authorized)])
    async def fetch(cid: CidPath, response: Response, wait: Wait = 0) -> Queued:
        """Ask the node to fetch this blob from its peers into its store."""
        return await queue("fetch", {"cid": _full_cid(cid)}, wait, response)

    @app.get("/events", response_model=list[Event], responses=READ, tags=["events"])
    def events(after: Annotated[int, Query(ge=0, le=SQL_INT_MAX, description="the last event id already seen")] = 0,
               limit: Annotated[int, Query(ge=1, le=500)] = 200,
               job_id: Annotated[int | None, Query(ge=0, le=SQL_INT_MAX)] = None) -> list[dict]:
        """The live feed, oldest first: poll with `after` = the last id you got."""
        return state.events(after_id=after, job_id=job_id, limit=limit)

    @app.get("/requests/{request_id}", response_model=RequestRow, responses={**READ, 404: {"model": ErrorBody}},
             tags=["requests"])
    def request(request_id: RowId) -> dict:
        row = state.request(request_id)
        if row is None:
            raise HTTPException(404, f"no request {request_id}; POST /jobs answers with the id of the request it queued")
        return row

    install_dashboard(app, state, home, responses=READ, not_found={404: {"model": ErrorBody}})
    return app


# -- the token -------------------------------------------------------------------------------------

def ensure_token(path: Path) -> str:
    """The API token in `path`, made (0600, atomically) on first use.

    The file is created with mode 0600 (never chmod-ed after, so no moment exists where another
    user could read it) and linked into place only if absent, so two starting processes agree on
    one token. A token others can read is refused rather than fixed: it may already have leaked.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if someone else made it first; then theirs is the token
            except FileExistsError:
                pass
            fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ApiError(f"the API token file {path} is open to other users (mode {mode & 0o777:04o}); "
                       f"delete it to make a new token, or `chmod 600 {path}` if it never left this machine")
    token = path.read_text("utf-8").strip()
    if not token:
        raise ApiError(f"the API token file {path} is empty; delete it and a new token is made")
    return token


# -- serving ---------------------------------------------------------------------------------------

class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self.ready.set()


class ApiServer:
    """uvicorn serving an app on (host, port) in a background thread; port 0 picks a free port.

    The socket is bound here, before the thread starts, so a taken port is an error from start()
    (not a log line in a thread) and `.port` is known at once.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.app, self.host, self.port, self.log_level = app, host, port, log_level
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "ApiServer":
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host, self.port), family=family)
        except OSError as e:
            hint = "is taken; choose another with `bitswarm config set api_port PORT`" if e.errno == errno.EADDRINUSE \
                else f"cannot be bound ({e.strerror})"
            raise ApiError(f"the API's address {self.host}:{self.port} {hint}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level=self.log_level,
                                access_log=self.log_level in ("debug", "info"), timeout_graceful_shutdown=5)
        self._server = _Server(config)

        def serve() -> None:
            try:
                self._server.run(sockets=[sock])
            except BaseException as e:  # noqa: BLE001 - reported by start(); uvicorn exits via SystemExit
                self._failure = e
            finally:
                sock.close()
                self._server.ready.set()

        self._thread = threading.Thread(target=serve, name=f"bitswarm-api-{self.port}", daemon=True)
        self._thread.start()
        self._server.ready.wait()
        if not self._server.started:
            self._thread.join()
            raise ApiError(f"the API at {self.url} did not start: {self._failure!r}")
        return self

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (5 s at most), and join the thread."""
        if self._thread is None:
            return
        closing = getattr(self.app.state, "closing", None)
        if closing is not None:
            closing.set()
        self._server.should_exit = True
        self._thread.join()
        self._thread = None

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
