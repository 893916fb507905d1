"""What the dashboard shows, built from the node's database and its home: plain dicts the routes
validate against their response models (node.dashboard.models).

Everything here is read-only and derived: the chain events the node followed (job timelines, the
dispute's bisection replayed round by round), the snapshots its loop wrote (network, peers), and
the JSON-lines logs that swarm peers and the assistant append to under the home.
"""

from __future__ import annotations

from pathlib import Path

from bitswarm.home import SWARM_REPORTS_LOG, Home
from bitswarm.node.state import NodeState
from bitswarm.store.jsonl import read_lines

MAX_EVENTS = 10_000  # per job: a dispute over 2**32 leaves takes ~32 rounds of a handful of events each
PHASES = {1: "step", 3: "op"}  # JobMarket's PHASE_STEP and PHASE_OP: the two bisections
# A job's chain events, named as its timeline shows them; the others (answers, attestations) are
# details of a stage, shown in the dispute view and the live feed.
STAGES = {"JobPosted": "posted", "JobClaimed": "claimed", "ResultCommitted": "committed", "AuditDrawn": "audited",
          "JobChallenged": "challenged", "StepFound": "step found", "OpFound": "op found",
          "RefereeVoted": "voted", "VoteExtended": "vote extended", "DisputeSettled": "settled",
          "JobFinalized": "finalized", "JobCancelled": "cancelled"}
REPORT_FIELDS = ("round", "reward", "local_groups", "external_groups", "external_available", "rollouts_shared",
                 "updated", "seconds", "time")


def _cid(value) -> str | None:
    """A store CID from an event's bytes32 (hex), or None for the empty one."""
    if not value:
        return None
    text = str(value).removeprefix("0x").removeprefix("sha256:")
    return None if not text.strip("0") else "sha256:" + text


# -- network -------------------------------------------------------------------------------------

def network(state: NodeState) -> dict:
    """Every registered node as the loop last read it, marked online when it is this node or one
    of its libp2p peers."""
    snap = state.snapshot("network") or {}
    status = state.snapshot("status") or {}
    peers = state.snapshot("peers") or []
    online = {p.get("peer_id") for p in peers} | {status.get("peer_id")}
    me = (status.get("address") or "").lower()
    nodes = [{**n, "online": bool(n.get("peer_id")) and n.get("peer_id") in online,
              "self": bool(me) and n.get("address", "").lower() == me} for n in snap.get("nodes", [])]
    return {"nodes": nodes, "peers": peers, "updated": snap.get("updated")}


# -- jobs ----------------------------------------------------------------------------------------

def timelines(state: NodeState, limit: int) -> list[dict]:
    """The newest `limit` jobs, each with the stages its chain events mark, oldest first."""
    out = []
    for job in state.jobs(limit=limit):
        events = state.events(job_id=job["job_id"], limit=MAX_EVENTS)
        stages = [{"stage": STAGES[e["name"]], "event": e["name"], "block": e["block"], "seen": e["seen"],
                   "event_id": e["id"]} for e in events if e["name"] in STAGES]
        rounds = sum(1 for e in events if e["name"] == "DisputeQuery")
        out.append({**job, "stages": stages, "dispute_rounds": rounds})
    return out


# -- the dispute ---------------------------------------------------------------------------------

def bisection(state: NodeState, job: dict) -> dict:
    """The dispute over `job` replayed from its events, as the contract narrowed it.

    JobMarket keeps the range [lo, hi] in storage and logs only the index it asks (DisputeQuery);
    the range follows from the answers: both sides giving the same value at the index moves lo
    past it, different values move hi to it. The step search starts on [0, num_leaves-1], the op
    search on [0, ops_per_leaf] (the last index stands for the state after the step)."""
    events = state.events(job_id=job["job_id"], limit=MAX_EVENTS)
    posted = next((e["args"] for e in events if e["name"] == "JobPosted"), {})
    job = {**job, **{k: posted[k] for k in ("num_leaves", "ops_per_leaf") if job.get(k) is None and k in posted}}
    rounds: list[dict] = []
    lo = hi = None
    answers: dict[str, str] = {}
    out = {"job_id": job["job_id"], "num_leaves": job.get("num_leaves"), "ops_per_leaf": job.get("ops_per_leaf"),
           "solver": job.get("solver"), "challenger": job.get("challenger"), "rounds": rounds, "step": None,
           "op": None, "traces": [], "votes": [], "releases": [], "verdict": None, "blobs": _blobs(job, events)}
    for e in events:
        a, name = e["args"], e["name"]
        if name == "JobChallenged":
            out["challenger"] = a.get("challenger") or out["challenger"]
            lo, hi = 0, max(0, (job.get("num_leaves") or 1) - 1)
        elif name == "DisputeQuery":
            phase = PHASES.get(a.get("phase"), str(a.get("phase")))
            if phase == "op" and (not rounds or rounds[-1]["phase"] != "op"):
                lo, hi = 0, job.get("ops_per_leaf") or 0
            rounds.append({"round": len(rounds) + 1, "phase": phase, "index": a.get("index"), "lo": lo, "hi": hi,
                           "agreed": None, "block": e["block"], "deadline": a.get("deadline")})
            answers = {}
        elif name in ("StepAnswered", "OpAnswered") and rounds:
            answers[str(a.get("party", "")).lower()] = str(a.get("leaf", a.get("digest")))
            if len(answers) == 2:
                agreed = len(set(answers.values())) == 1
                rounds[-1]["agreed"] = agreed
                if lo is not None:
                    lo, hi = (a.get("index", 0) + 1, hi) if agreed else (lo, a.get("index"))
        elif name == "StepFound":
            out["step"] = a.get("step_index")
        elif name == "TraceCommitted":
            out["traces"].append({"party": a.get("party"), "trace_root": a.get("trace_root"), "n_ops": a.get("n_ops")})
        elif name == "OpFound":
            out["step"], out["op"] = a.get("step", out["step"]), a.get("op")
        elif name == "RefereeVoted":
            out["votes"].append({"referee": a.get("referee"), "solver_wins": bool(a.get("solver_wins")),
                                 "weight": a.get("weight"), "block": e["block"]})
        elif name == "VoteReleased":
            out["releases"].append({"referee": a.get("referee"), "weight": a.get("weight"),
                                    "slashed": bool(a.get("slashed"))})
        elif name == "DisputeSettled":
            # JobMarket._settle slashes the loser by the job's solver stake (the challenger locked as much).
            out["verdict"] = {"winner": a.get("winner"), "loser": a.get("loser"), "reason": a.get("reason"),
                              "slashed": job.get("solver_stake"), "block": e["block"]}
    return out


def _blobs(job: dict, events: list[dict]) -> list[dict]:
    """The blobs a job names: its spec and result (the roots in a dispute are Merkle roots, not blobs)."""
    found = [("spec", job.get("spec_cid")), ("result", job.get("result_cid"))]
    found += [("result", _cid(e["args"].get("result_cid"))) for e in events if e["name"] == "ResultCommitted"]
    seen, out = set(), []
    for what, cid in found:
        if cid and cid not in seen and _cid(cid):
            seen.add(cid)
            out.append({"what": what, "cid": cid})
    return out


# -- swarm and assistant logs ----------------------------------------------------------------------

def swarm(home: Home | None) -> list[dict]:
    """Per swarm folder, each peer's round reports in round order (the reward curve)."""
    if home is None or not home.swarms.is_dir():
        return []
    swarms: dict[str, dict[str, list[dict]]] = {}
    for log in sorted(home.swarms.glob(f"**/{SWARM_REPORTS_LOG}")):
        folder = log.relative_to(home.swarms).parts[0]
        peers = swarms.setdefault(folder, {})
        for row in read_lines(log):
            peer = str(row.get("peer") or log.parent.name)
            peers.setdefault(peer, []).append({k: row[k] for k in REPORT_FIELDS if k in row})
    return [{"swarm": folder, "peers": [{"peer": p, "points": sorted(pts, key=lambda r: (r.get("round", 0),
                                                                                          r.get("time", 0)))}
                                        for p, pts in sorted(peers.items())]}
            for folder, peers in sorted(swarms.items())]


def assist(home: Home | None) -> dict:
    if home is None:
        return {"shared": 0, "shared_bytes": 0, "models": [], "simulations": []}
    shared = read_lines(home.assist_shared)
    models = [{k: m.get(k) for k in ("model", "examples", "steps", "final_state_hash")} | {"episodes": len(m.get("episodes") or [])}
              for m in read_lines(home.assist_models)]
    return {"shared": len(shared), "shared_bytes": sum(int(s.get("size") or 0) for s in shared),
            "models": models, "simulations": read_lines(home.assist_simulations)}


def file_stamp(home: Home | None) -> tuple:
    """What changes when a swarm or assistant log grows: (path, size) of each."""
    if home is None:
        return ()
    paths: list[Path] = [home.assist_shared, home.assist_models, home.assist_simulations]
    if home.swarms.is_dir():
        paths += sorted(home.swarms.glob(f"**/{SWARM_REPORTS_LOG}"))
    return tuple((str(p), p.stat().st_size) for p in paths if p.is_file())
