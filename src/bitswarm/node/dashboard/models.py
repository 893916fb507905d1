"""The dashboard's JSON, one response model per route (node.dashboard), so the OpenAPI document is exact."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NetworkNode(BaseModel):
    model_config = ConfigDict(extra="allow")
    address: str
    peer_id: str | None = None
    roles: list[str] = []
    staked: int | None = Field(None, description="stake in the node registry, token units")
    locked: int | None = Field(None, description="stake locked by claimed jobs and votes, token units")
    unbonding: int | None = None
    token: int | None = Field(None, description="credits held, token units")
    online: bool = Field(False, description="this node, or one of its libp2p peers")
    self: bool = Field(False, description="the node serving this API")


class Network(BaseModel):
    nodes: list[NetworkNode] = Field(description="every node registered on chain, as the loop last read it")
    peers: list[dict[str, Any]] = Field(description="this node's libp2p peers")
    updated: float | None = Field(None, description="when the loop read the registry (None: not yet)")


class Stage(BaseModel):
    stage: str = Field(description="posted, claimed, committed, challenged, settled, finalized, …")
    event: str
    block: int
    seen: float = Field(description="when this node saw the event (unix seconds)")
    event_id: int


class JobTimeline(BaseModel):
    model_config = ConfigDict(extra="allow")  # the job's row, as GET /jobs has it
    job_id: int
    kind: str | None = None
    status: str
    bounty: int | None = None
    solver_stake: int | None = None
    solver: str | None = None
    challenger: str | None = None
    winner: str | None = None
    stages: list[Stage]
    dispute_rounds: int = Field(0, description="bisection rounds the contract asked (DisputeQuery events)")


class BisectionRound(BaseModel):
    round: int
    phase: str = Field(description="step (leaves of the job) or op (ops of the one disputed step)")
    index: int | None = Field(None, description="the index asked this round")
    lo: int | None = Field(None, description="the range still in dispute, both ends included")
    hi: int | None = None
    agreed: bool | None = Field(None, description="whether both sides gave the same value (None: not both answered)")
    block: int
    deadline: int | None = None


class Vote(BaseModel):
    referee: str | None = None
    solver_wins: bool
    weight: int | None = None
    block: int


class Release(BaseModel):
    referee: str | None = None
    weight: int | None = None
    slashed: bool


class Verdict(BaseModel):
    winner: str | None = None
    loser: str | None = None
    reason: str | None = None
    slashed: int | None = Field(None, description="stake taken from the loser (the job's solver stake), token units")
    block: int


class BlobRef(BaseModel):
    what: str
    cid: str


class Bisection(BaseModel):
    job_id: int
    num_leaves: int | None = None
    ops_per_leaf: int | None = None
    solver: str | None = None
    challenger: str | None = None
    rounds: list[BisectionRound] = Field(description="one per DisputeQuery, the range narrowing round by round")
    step: int | None = Field(None, description="the disputed step (StepFound / OpFound)")
    op: int | None = Field(None, description="the disputed op within it (OpFound)")
    traces: list[dict[str, Any]]
    votes: list[Vote]
    releases: list[Release]
    verdict: Verdict | None = None
    blobs: list[BlobRef]


class Curve(BaseModel):
    peer: str
    points: list[dict[str, Any]] = Field(description="round reports in round order: round, reward, time, …")


class SwarmCurves(BaseModel):
    swarm: str = Field(description="the swarm's folder under <home>/swarm")
    peers: list[Curve]


class AssistStats(BaseModel):
    shared: int = Field(description="episodes this home shared")
    shared_bytes: int
    models: list[dict[str, Any]] = Field(description="trained assistant models, oldest first")
    simulations: list[dict[str, Any]] = Field(description="one per `assist simulate` run, oldest first")


class BlobInfo(BaseModel):
    cid: str
    in_store: bool = Field(description="whether this node's store holds it")
    size: int | None = None
    served: bool = Field(description="whether this node announces it to peers")
    what: str | None = None
    job_id: int | None = None
