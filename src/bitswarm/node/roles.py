"""What a node does with each job, by role: a reconciler run every tick against the chain.

Each handler reads the job's state on chain, decides what this node should do, writes that
decision to the node's database (NodeState.decide) *before* sending the transaction, then sends
it and marks it done. A decision found undone after a restart is reconciled with the chain
first (did the claim, commit, challenge or vote land?) and only then sent again; a decision is
unique per (job, action), so nothing is claimed, committed, challenged or voted twice.

Heavy work (training, replaying, tracing) runs inline in the node's loop, one job at a time; the
blob exchange and the HTTP API run on their own threads and keep serving meanwhile.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field

from bitswarm.errors import BitswarmError
from bitswarm.jobs.onchain import ChainParty, challenge, commit_result, evidence
from bitswarm.ledger.client import DISPUTE_PHASE, JOB_STATUS, KINDS, Ledger
from bitswarm.ledger.errors import LedgerError, RevertError
from bitswarm.verify.game import Party, rule

log = logging.getLogger("bitswarm.node")


def lazy_market():
    """jobs.market, imported on first use: an idle node never loads the kernels (numba, the
    model code) that only work on a job needs."""
    from bitswarm.jobs import market

    return market


def _hex(v) -> str:
    return v.hex() if isinstance(v, (bytes, bytearray)) else str(v).removeprefix("0x")


def now(lg: Ledger) -> int:
    """The chain's time as a deadline will see it: a devnet mines only on transactions, so its
    last block can be older than the next one will be."""
    return max(lg.timestamp(), int(time.time()))


def cid_of(v) -> str:
    """A CID as the store names it, from the bytes32 a contract holds."""
    return "sha256:" + _hex(v)


@dataclass
class Work:
    """In-memory parts of a job this node works on, rebuilt from disk after a restart."""

    doc: dict | None = None
    party: Party | None = None  # this node's side in a dispute (solver or challenger)
    serve: list[str] = field(default_factory=list)
    declined: str | None = None  # why this node will not solve it (checked once per start)


class Roles:
    """The solver, verifier and referee logic of one node (`node` is a daemon.Node)."""

    def __init__(self, node):
        self.node = node
        self.work: dict[int, Work] = {}

    # -- helpers ------------------------------------------------------------------------------

    @property
    def lg(self) -> Ledger:
        return self.node.ledger

    @property
    def me(self) -> str:
        return self.lg.address

    def _send(self, job_id: int, action: str, send, landed) -> bool:
        """Send a decided action's transaction unless `landed()` says the chain already has it;
        returns whether it is in effect now."""
        st = self.node.state
        d = st.decision(job_id, action)
        if d and d["state"] in ("done", "failed"):
            return d["state"] == "done"
        if landed():
            st.mark(job_id, action, "done")
            return True
        st.mark(job_id, action, "sent")
        try:
            rc = send()
        except RevertError as e:
            st.mark(job_id, action, "failed", error=str(e))
            log.info("job %s: %s refused by the chain: %s", job_id, action, e)
            return False
        st.mark(job_id, action, "done", tx_hash=getattr(rc, "tx_hash", None))
        log.info("job %s: %s", job_id, action)
        return True

    def _doc(self, job_id: int, chain_job: dict) -> dict:
        w = self.work.setdefault(job_id, Work())
        if w.doc is None:
            cid = cid_of(chain_job["spec_cid"])
            self.node.fetch(cid)
            w.doc = lazy_market().load_doc(self.node.store, cid)
        return w.doc

    def _local(self, job_id: int, text: str, **fields) -> None:
        self.node.state.upsert_job(job_id, local=text, **fields)

    # -- the tick --------------------------------------------------------------------------------

    def act(self, job_id: int) -> None:
        job = self.lg.job(job_id)
        status = JOB_STATUS.get(job["status"], "unknown")
        roles = self.node.roles
        try:
            if "solver" in roles:
                self.solver(job_id, job, status)
            if "verifier" in roles:
                self.verifier(job_id, job, status)
            if "referee" in roles:
                self.referee(job_id, job, status)
            self.anyone(job_id, job, status)
        except RevertError as e:  # a transaction the chain refused: this job waits, the others go on
            self._local(job_id, "the chain refused a transaction", error=str(e))
            log.warning("job %s: %s", job_id, e)
        except LedgerError:
            raise  # the chain is away: the loop retries the whole tick
        except BitswarmError as e:  # a bad document, an input nobody serves, a game that cannot go on
            self._local(job_id, "cannot work on it", error=str(e))
            log.warning("job %s: %s", job_id, e)

    # -- solver ------------------------------------------------------------------------------------

    def _can_run(self, job_id: int, job: dict) -> str | None:
        """Why this node will not take the job, or None."""
        cfg = self.node.settings
        if job["poster"].lower() == self.me.lower():
            return "posted it"
        kind = {v: k for k, v in KINDS.items()}[job["kind"]]
        if kind not in cfg.solver_kinds:
            return f"kind {kind} is not in solver_kinds"
        if job["num_leaves"] > cfg.max_steps:
            return f"{job['num_leaves']} steps exceed max_steps {cfg.max_steps}"
        if job["solver_stake"] > self.lg.call("NodeRegistry", "free_stake", self.me):
            return "not enough free stake"
        doc = self._doc(job_id, job)
        if doc["model_bytes"] > cfg.max_model_bytes:
            return f"model of {doc['model_bytes']} bytes exceeds max_model_bytes {cfg.max_model_bytes}"
        for cid in lazy_market().inputs(doc):
            self.node.fetch(cid)
        if self.node.store.size(doc["spec"]["model"]) != doc["model_bytes"]:
            return "the job document misstates its model's size"
        leaves, ops = lazy_market().plan(self.node.store, doc)
        if (leaves, ops) != (job["num_leaves"], job["ops_per_leaf"]):
            return f"the job posts {job['num_leaves']} leaves of {job['ops_per_leaf']} ops; its spec has {leaves} of {ops}"
        return None

    def solver(self, job_id: int, job: dict, status: str) -> None:
        st = self.node.state
        mine = job["solver"].lower() == self.me.lower()
        w = self.work.setdefault(job_id, Work())
        if status == "open" and st.decision(job_id, "claim") is None and not self.node.busy_solving(job_id):
            if w.declined:
                return
            why = w.declined = self._can_run(job_id, job)
            if why:
                if st.job(job_id) and st.job(job_id)["role"] is None:
                    self._local(job_id, f"not solving: {why}")
                return
            st.decide(job_id, "claim")
            st.upsert_job(job_id, role="solver")
        if st.decision(job_id, "claim") and st.decision(job_id, "claim")["state"] in ("decided", "sent"):
            if not self._send(job_id, "claim", lambda: self.lg.claim_job(job_id),
                              lambda: job["solver"].lower() == self.me.lower()):
                self._local(job_id, "another solver claimed it first")
                return
            job = self.lg.job(job_id)
            status, mine = JOB_STATUS[job["status"]], True
        if not mine:
            return
        if status in ("claimed", "committed", "disputed") and w.party is None:
            doc = self._doc(job_id, job)
            self._local(job_id, "solving")
            out = self.node.home.job_dir(job_id, "solver")
            solved = lazy_market().solve(self.node.store, doc, out, self.node.adversary,
                                  on_step=lambda row: self._local(job_id, f"solving: step {row['step']}"))
            w.party, w.serve = solved.party, solved.serve
            for cid in solved.serve:
                self.node.announce(cid, f"job {job_id} result", job_id)
            st.decide(job_id, "commit", root=solved.party.root, result_cid=solved.result_cid)
        if status == "claimed":
            d = st.decision(job_id, "commit")
            if self._send(job_id, "commit", lambda: commit_result(self.lg, job_id, w.party, d["args"]["result_cid"]),
                          lambda: JOB_STATUS[self.lg.job(job_id)["status"]] != "claimed"):
                self._local(job_id, "committed; serving the result", result_cid=d["args"]["result_cid"])
        if status == "disputed":
            self._play(job_id, w.party, "solver")

    # -- verifier ----------------------------------------------------------------------------------

    def verifier(self, job_id: int, job: dict, status: str) -> None:
        st = self.node.state
        if job["solver"].lower() == self.me.lower() or job["poster"].lower() == self.me.lower():
            return
        w = self.work.setdefault(job_id, Work())
        t = now(self.lg)
        if status == "committed" and t <= job["challenge_deadline"] and st.decision(job_id, "audit") is None:
            # Which steps to re-execute is this verifier's secret: a solver that could predict
            # them would cheat on the others.
            st.decide(job_id, "audit", seed=secrets.randbits(63))
            st.upsert_job(job_id, role="verifier")
        d = st.decision(job_id, "audit")
        if d is None:
            return
        if d["state"] == "decided" and status == "committed":
            self._local(job_id, "auditing")
            doc = self._doc(job_id, job)
            for cid in lazy_market().inputs(doc):
                self.node.fetch(cid)
            cfg = self.node.settings
            result = lazy_market().audit(
                self.node.store, doc, cid_of(job["result_cid"]), self.node.fetch, self.node.home.job_dir(job_id, "verifier"),
                root=_hex(job["result_root"]), last_leaf=_hex(job["result_leaf"]), audit_leaf=job["audit_leaf"] if job.get("verify_fee") else None,
                samples=max(1, round(cfg.verify_sample_rate * job["num_leaves"])), seed=d["args"]["seed"],
                lazy=self.node.lazy)
            st.mark(job_id, "audit", "done", error=None if result.ok else result.why)
            if result.ok:
                self._local(job_id, f"audited: steps {[k + 1 for k in result.checked]} reproduce")
                if result.attestation is not None and job.get("verify_fee"):
                    st.decide(job_id, "attest", value=result.attestation)
            else:
                self._local(job_id, f"audit failed: {result.why}")
                if result.party is not None:
                    w.party = result.party
                    for cid in result.serve:
                        self.node.announce(cid, f"job {job_id} challenger run", job_id)
                    st.decide(job_id, "challenge", root=result.party.root)
        if st.decision(job_id, "challenge") is not None:
            if w.party is None:  # after a restart: the verifier's own run is on disk
                doc = self._doc(job_id, job)
                result = lazy_market().audit(
                    self.node.store, doc, cid_of(job["result_cid"]), self.node.fetch,
                    self.node.home.job_dir(job_id, "verifier"), root=_hex(job["result_root"]),
                    last_leaf=_hex(job["result_leaf"]), audit_leaf=None, samples=job["num_leaves"], seed=job_id)
                w.party = result.party
            if w.party is None:
                return
            if status == "committed":
                self._send(job_id, "challenge", lambda: challenge(self.lg, job_id, w.party),
                           lambda: JOB_STATUS[self.lg.job(job_id)["status"]] != "committed")
                self._local(job_id, "challenged: playing the dispute")
            elif status == "disputed" and self.lg.dispute(job_id)["challenger"].lower() == self.me.lower():
                self._play(job_id, w.party, "challenger")
        self._fee(job_id, job, status, "attest")

    def _fee(self, job_id: int, job: dict, status: str, action: str) -> None:
        """Attest during the window and reveal after it (the verification fee), where the
        contract has them."""
        st = self.node.state
        d = st.decision(job_id, action)
        if d is None:
            return
        from bitswarm.verify.attest import commitment

        t = now(self.lg)
        if d["state"] == "decided" and status == "committed" and t <= job["challenge_deadline"]:
            self._send(job_id, action, lambda: self.lg.attest(job_id, commitment(d["args"]["value"], self.me)),
                       lambda: False)
        if st.decision(job_id, action)["state"] == "done" and status == "committed" and t > job["challenge_deadline"]:
            st.decide(job_id, "reveal", value=d["args"]["value"])
            self._send(job_id, "reveal", lambda: self.lg.reveal(job_id, d["args"]["value"]), lambda: False)

    # -- referee -----------------------------------------------------------------------------------

    def referee(self, job_id: int, job: dict, status: str) -> None:
        st = self.node.state
        if status != "disputed" or self.me.lower() in (job["solver"].lower(), job["poster"].lower()):
            return
        d = self.lg.dispute(job_id)
        if d["challenger"].lower() == self.me.lower() or DISPUTE_PHASE[d["phase"]] != "vote":
            return
        if st.decision(job_id, "vote") is None:
            st.upsert_job(job_id, role="referee")
            self._local(job_id, "refereeing: recomputing the disputed op")
            doc = self._doc(job_id, job)
            for cid in lazy_market().inputs(doc):
                self.node.fetch(cid)
            e = evidence(self.lg, job_id)
            out = self.node.home.job_dir(job_id, "referee")
            try:
                ref, parties = lazy_market().referee(self.node.store, doc, cid_of(job["result_cid"]), self.node.fetch, out, e["k"])
                verdict = rule(ref, parties, e["k"], e["i"], job["ops_per_leaf"], e["before"], e["prev"], e["values"])
            except BitswarmError as err:  # the solver's data is missing or does not reach the agreed leaf
                log.info("job %s: ruling from its own recomputation (%s)", job_id, err)
                self._local(job_id, "refereeing: recomputing the job itself")
                ref, parties = lazy_market().referee(self.node.store, doc, None, self.node.fetch, out, e["k"], own=True)
                verdict = rule(ref, parties, e["k"], e["i"], job["ops_per_leaf"], e["before"], e["prev"], e["values"])
            if verdict["winner"] is None:
                self._local(job_id, "abstained: neither side computed the op the referee did")
                st.decide(job_id, "vote", abstain=True)
                st.mark(job_id, "vote", "done")
                return
            st.decide(job_id, "vote", solver_wins=verdict["winner"] == "solver", op=verdict["op"])
        v = st.decision(job_id, "vote")
        if v["state"] in ("decided", "sent"):
            self._send(job_id, "vote", lambda: self.lg.vote(job_id, v["args"]["solver_wins"]),
                       lambda: bool(self.lg.call("JobMarket", "voted", job_id, self.me)))
            self._local(job_id, f"voted for the {'solver' if v['args']['solver_wins'] else 'challenger'}")

    # -- anyone ------------------------------------------------------------------------------------

    def anyone(self, job_id: int, job: dict, status: str) -> None:
        """Move deadlines on (settle, finalize, release a vote) for jobs this node is part of."""
        st = self.node.state
        row = st.job(job_id) or {}
        if row.get("role") is None:
            return
        t = now(self.lg)
        if status == "disputed":
            d = self.lg.dispute(job_id)
            if t > d["deadline"]:
                try:
                    self.lg.settle(job_id)
                except RevertError:
                    pass
        elif status == "committed" and t > job["challenge_deadline"]:
            if row.get("role") == "solver" and job.get("verify_fee"):
                self._solver_reveal(job_id, job)
            try:
                self.lg.finalize(job_id)
            except RevertError:
                pass
        elif status == "claimed" and t > job["commit_deadline"] and job["solver"].lower() != self.me.lower():
            try:
                self.lg.settle(job_id)
            except RevertError:
                pass
        if status in ("done", "failed") and row.get("role") == "referee" and st.decision(job_id, "release") is None:
            if self.lg.vote_weight(job_id):
                st.decide(job_id, "release")
                self._send(job_id, "release", lambda: self.lg.release_vote(job_id), lambda: not self.lg.vote_weight(job_id))

    def _solver_reveal(self, job_id: int, job: dict) -> None:
        st = self.node.state
        w = self.work.get(job_id)
        if st.decision(job_id, "reveal") is None:
            if w is None or w.party is None:
                return
            from bitswarm.verify.attest import attestation

            st.decide(job_id, "reveal", value=attestation(w.party, job["audit_leaf"]))
        d = st.decision(job_id, "reveal")
        self._send(job_id, "reveal", lambda: self.lg.reveal(job_id, d["args"]["value"]), lambda: False)

    # -- the dispute ---------------------------------------------------------------------------------

    def _play(self, job_id: int, party: Party | None, role: str) -> None:
        if party is None:
            return
        cp = ChainParty(self.lg, job_id, party, role)
        did = cp.act()
        d = self.lg.dispute(job_id)
        phase = DISPUTE_PHASE[d["phase"]]
        key = (phase, d["index"], d["lo"], d["hi"])
        path = self.node.state.dispute_path(job_id)
        if not path or (path[-1]["phase"], path[-1]["idx"], path[-1]["lo"], path[-1]["hi"]) != key:
            self.node.state.add_dispute_round(job_id, len(path) + 1, phase, idx=d["index"], lo=d["lo"], hi=d["hi"],
                                              solver_answer=_hex(d["solver_answer"]),
                                              challenger_answer=_hex(d["challenger_answer"]),
                                              block=self.lg.block_number())
        if did:
            self._local(job_id, f"dispute: answered {did}")

