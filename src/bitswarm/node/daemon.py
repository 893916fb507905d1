"""`bitswarm node run`: one long-running process per node.

It follows the ledger's events from its last processed block (kept in its database, so a
restart neither replays nor skips one), keeps a row per job, and every tick lets its roles
(node.roles) act on the jobs that are not finished. Blobs are served and fetched by the blob
exchange (its own libp2p daemon, on its own thread); the HTTP API (node.api) reads the same
database on its own thread and queues requests (submit a job, announce or fetch a blob) that the
loop carries out. SIGINT and SIGTERM stop the loop after the current step of work, then the API
and the exchange (whose libp2p daemon is reaped) are closed and node.json is removed.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import threading
import time

from eth_utils import event_abi_to_log_topic

from bitswarm.errors import BitswarmError
from bitswarm.home import Home
from bitswarm.ledger.client import JOB_STATUS, KINDS, ROLE_NAMES, Ledger
from bitswarm.ledger.errors import LedgerError, RevertError
from bitswarm.node.config import Settings
from bitswarm.node.roles import Roles, cid_of, lazy_market
from bitswarm.node.state import NodeState
from bitswarm.store import BlobStore
from bitswarm.store.atomic import atomic_write_text

log = logging.getLogger("bitswarm.node")

FINAL = ("done", "failed", "cancelled")
SNAPSHOT_EVERY_S = 15  # balances only change with blocks; a new block refreshes them at once
NETWORK_EVERY_S = 5  # the dashboard's network: two calls per registered node, so not on every block
EVENT_CONTRACT = "JobMarket"


def _trim_heap() -> None:
    """Hand the heap that start-up freed (imports, the DHT's start) back to the system."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


class NodeError(BitswarmError):
    """The node cannot start or go on; says what to do."""


def _hex(v) -> str:
    return v.hex() if isinstance(v, (bytes, bytearray)) else str(v).removeprefix("0x")


class Node:
    def __init__(self, home: Home, settings: Settings, ledger: Ledger, peer_key=None, *,
                 adversary: str | None = None, lazy: bool = False, api: bool = True, on_ready=None):
        self.home, self.settings, self.ledger = home, settings, ledger
        self.roles = set(settings.roles)
        self.store = BlobStore(home.store)
        self.state = NodeState(home.node_db)
        self.peer_key = peer_key
        self.adversary, self.lazy = adversary, lazy
        self.with_api = api
        self.on_ready = on_ready  # called with node.json's content once the node serves
        self.exchange = None
        self.api = None
        self._stop = threading.Event()
        self.started = time.time()
        self.work = Roles(self)
        self._registered: dict[str, str] = {}  # the network snapshot's nodes: lower-case address -> address
        self._registry_block = 0  # the next block to look for NodeRegistered in
        self._snapped = 0.0  # when the balances/peers/status snapshot was last written
        self._networked = 0.0  # when the network snapshot was last written

    # -- lifecycle ------------------------------------------------------------------------------

    def check_registration(self) -> None:
        if not self.roles:  # a node that only posts jobs and serves their inputs
            return
        node = self.ledger.node()
        if not node["registered"]:
            raise NodeError(f"{self.ledger.address} is not registered on chain; run `bitswarm node register "
                            f"--stake N --roles {','.join(sorted(self.roles))}` first")
        missing = [r for r in self.roles if not node["roles"] & ROLE_NAMES[r]]
        if missing:
            raise NodeError(f"{self.ledger.address} is not registered as {', '.join(missing)}; register those roles "
                            "(`bitswarm node register --roles ...`) or run with fewer --roles")

    def start(self) -> None:
        self.check_registration()
        from bitswarm.node.exchange import BlobExchange

        self.exchange = BlobExchange(self.store, identity=self.peer_key, listen=self.settings.listen,
                                     bootstrap=self.settings.bootstrap, policy=self.settings.serve_blobs)
        self.exchange.start()
        for b in self.state.blobs():
            self.exchange.announce(b["cid"])
        if self.with_api:
            from bitswarm.node.api import ApiServer, create_app, ensure_token

            token = ensure_token(self.home.api_token_file)
            self.api = ApiServer(create_app(self.state, token, self.home), self.settings.api_host, self.settings.api_port)
            self.api.start()
        self.state.set_meta("address", self.ledger.address)
        self.state.set_meta("started", str(self.started))
        info = {"pid": os.getpid(), "address": self.ledger.address, "peer_id": self.exchange.peer_id,
                "api_url": self.api.url if self.api else None, "maddrs": self.exchange.maddrs,
                "roles": sorted(self.roles)}
        atomic_write_text(self.home.node_info_file, json.dumps(info, indent=2))
        if self.on_ready:
            self.on_ready(info)
        self._snapshot(force=True)
        _trim_heap()
        log.info("node %s up: roles %s, peer %s, api %s", self.ledger.address, ",".join(sorted(self.roles)),
                 self.exchange.peer_id, self.api.url if self.api else "off")

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for part in (self.api, self.exchange):
            if part is not None:
                try:
                    part.close() if hasattr(part, "close") else part.stop()
                except Exception as e:  # noqa: BLE001 - shutting down: report and go on closing the rest
                    log.warning("closing %s: %s", type(part).__name__, e)
        try:
            info = json.loads(self.home.node_info_file.read_text())
            if info.get("pid") == os.getpid():
                self.home.node_info_file.unlink()
        except (OSError, ValueError):
            pass
        self.state.close()

    def run(self) -> None:
        """Start, tick until a signal, close."""
        previous = {s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not self._stop.is_set():
                try:
                    self.tick()
                except LedgerError as e:  # the chain went away for a moment: try again next tick
                    log.warning("chain: %s", e)
                self._stop.wait(self.settings.poll_seconds)
        finally:
            self.close()
            for s, h in previous.items():
                signal.signal(s, h)

    # -- blobs ----------------------------------------------------------------------------------

    def fetch(self, cid: str) -> None:
        if not self.store.has(cid):
            self.exchange.fetch(cid)

    def announce(self, cid: str, what: str, job_id: int | None = None) -> None:
        self.state.add_blob(cid, what, job_id)
        self.exchange.announce(cid)

    # -- the tick ----------------------------------------------------------------------------------

    def tick(self) -> None:
        moved = self._follow()
        self._requests()
        for row in self.state.jobs():
            if self._stop.is_set():
                return
            if row["status"] in FINAL and not self._pending(row["job_id"]):
                continue
            if not moved and row["role"] is None:  # nothing happened to a job this node is not part of
                continue
            try:
                self.work.act(row["job_id"])
                self._refresh(row["job_id"])
            except LedgerError:
                raise  # the chain is away: the whole tick waits for it
            except Exception as e:  # noqa: BLE001 - one job's failure must not stop the node's other work
                log.exception("job %s: %s", row["job_id"], e)
                self.state.upsert_job(row["job_id"], error=f"{type(e).__name__}: {e}")
            self._requests()  # a submit waiting on the API should not wait for a whole training run
        self._snapshot(force=moved)

    def _pending(self, job_id: int) -> bool:
        return any(d["state"] in ("decided", "sent") for d in self.state.decisions(job_id)) or (
            (self.state.job(job_id) or {}).get("role") == "referee" and self.state.decision(job_id, "release") is None
            and bool(self.ledger.vote_weight(job_id)))

    def busy_solving(self, job_id: int) -> bool:
        """Whether another of this node's jobs is still being solved or can still be disputed. It
        takes one at a time: heavy work runs in the loop, and a solver training a second job
        could not answer a dispute over its first before the round's deadline."""
        return any(r["job_id"] != job_id and r["status"] in ("claimed", "committed", "disputed")
                   for r in self.state.jobs(role="solver"))

    def _follow(self) -> bool:
        """Apply the market's events since the cursor; returns whether the chain moved. One
        eth_getLogs call per new range, decoded by topic, keeps an idle node nearly idle."""
        head = self.ledger.block_number()
        start = self.state.last_block + 1
        if head < start:
            return False
        c = self.ledger.contract(EVENT_CONTRACT)
        if not hasattr(self, "_topics"):
            self._topics = {event_abi_to_log_topic(a): a["name"] for a in c.abi if a["type"] == "event"}
        logs = self.ledger.w3.eth.get_logs({"address": c.address, "fromBlock": start, "toBlock": head})
        events = []
        for lg in logs:
            name = self._topics.get(bytes(lg["topics"][0])) if lg["topics"] else None
            if name is None:
                continue
            ev = getattr(c.events, name)().process_log(lg)
            events.append({"contract": EVENT_CONTRACT, "event": name, "block": lg["blockNumber"],
                           "log_index": lg["logIndex"], "args": dict(ev["args"])})
        events.sort(key=lambda e: (e["block"], e["log_index"]))
        for e in self.state.add_events(events, head):
            job_id = e["args"].get("job_id")
            if job_id is not None:
                self._refresh(int(job_id))
        return True

    def _refresh(self, job_id: int) -> None:
        j = self.ledger.job(job_id)
        kinds = {v: k for k, v in KINDS.items()}
        fields = dict(kind=kinds.get(j["kind"]), spec_cid=cid_of(j["spec_cid"]), poster=j["poster"], bounty=j["bounty"],
                      solver_stake=j["solver_stake"], challenge_window=j["challenge_window"],
                      num_leaves=j["num_leaves"], ops_per_leaf=j["ops_per_leaf"],
                      status=JOB_STATUS.get(j["status"], str(j["status"])))
        if int(j["solver"], 16):
            fields["solver"] = j["solver"]
        if int(_hex(j["result_root"]) or "0", 16):
            fields.update(result_root=_hex(j["result_root"]), result_cid=cid_of(j["result_cid"]))
        if "verify_fee" in j:
            fields["verify_fee"] = j["verify_fee"]
        if fields["status"] in ("disputed", "done", "failed"):
            d = self.ledger.dispute(job_id)
            if int(d["challenger"], 16):
                fields["challenger"] = d["challenger"]
            if int(d["winner"], 16):
                fields["winner"] = d["winner"]
        if j["poster"].lower() == self.ledger.address.lower():
            fields["role"] = "poster"
        self.state.upsert_job(job_id, **fields)

    # -- requests from the API -----------------------------------------------------------------------

    def _requests(self) -> None:
        for r in self.state.pending_requests():
            try:
                result = self._do(r["kind"], r["body"])
            except (BitswarmError, RevertError) as e:
                self.state.finish_request(r["id"], False, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - the request fails, the node goes on
                log.exception("request %s (%s): %s", r["id"], r["kind"], e)
                self.state.finish_request(r["id"], False, {"error": f"{type(e).__name__}: {e}"})
            else:
                self.state.finish_request(r["id"], True, result)

    def _do(self, kind: str, body: dict) -> dict:
        if kind == "announce":
            if not self.store.has(body["cid"]):
                raise NodeError(f"blob {body['cid']} is not in this node's store")
            self.announce(body["cid"], body.get("what", "announced through the API"))
            return {"cid": body["cid"]}
        if kind == "fetch":
            self.fetch(body["cid"])
            return {"cid": body["cid"], "size": self.store.size(body["cid"])}
        if kind == "submit_job":
            return self._submit(body)
        raise NodeError(f"unknown request kind {kind!r}")

    def _submit(self, body: dict) -> dict:
        """Post a job whose document is already in this node's store (`bitswarm job submit` put it
        there): plan it, publish the document and its inputs, post it with its bounty."""
        cid = body["spec_cid"]
        if not self.store.has(cid):
            raise NodeError(f"job document {cid} is not in this node's store; `bitswarm job submit` stores it")
        doc = lazy_market().load_doc(self.store, cid)
        if doc["kind"] != body["kind"]:
            raise NodeError(f"the document is a {doc['kind']} job, not {body['kind']}")
        for c in lazy_market().inputs(doc):
            if not self.store.has(c):
                raise NodeError(f"input {c} of the job is not in this node's store")
        leaves, ops = lazy_market().plan(self.store, doc)
        for c in [cid, *lazy_market().inputs(doc)]:
            self.announce(c, "job input")
        stake = body.get("stake") or self.ledger.call("JobMarket", "min_stake")
        extra = {"verify_fee": body["verify_fee"]} if body.get("verify_fee") else {}
        job_id = self.ledger.post_job(cid, doc["kind"], leaves, body["bounty"], stake, body["window"], ops_per_leaf=ops,
                                      **extra)
        self.state.upsert_job(job_id, role="poster", kind=doc["kind"], spec_cid=cid, posted=time.time())
        return {"job_id": job_id, "num_leaves": leaves, "ops_per_leaf": ops}

    # -- what the API shows ---------------------------------------------------------------------------

    def _snapshot(self, force: bool = False) -> None:
        now = time.time()
        if now - self._networked >= NETWORK_EVERY_S:
            self._network(now)
        if not force and now - self._snapped < SNAPSHOT_EVERY_S:
            return
        self._snapped = now
        lg = self.ledger
        node = lg.node()
        self.state.put_snapshot("balances", {
            "address": lg.address, "token": lg.token_balance(), "eth": lg.eth_balance(),
            "stake": node["staked"], "locked": node["locked"], "unbonding": node["unbonding"]})
        self.state.put_snapshot("peers", self.exchange.peers() if self.exchange else [])
        self.state.put_snapshot("status", {
            "state": "running", "address": lg.address, "peer_id": self.exchange.peer_id if self.exchange else None,
            "roles": sorted(self.roles), "block": lg.block_number(), "uptime_s": round(now - self.started, 1),
            "api_url": self.api.url if self.api else None, "maddrs": self.exchange.maddrs if self.exchange else [],
            "exchange": self.exchange.stats() if self.exchange else {}, "pid": os.getpid(),
            "adversary": self.adversary, "lazy": self.lazy})

    def _network(self, now: float) -> None:
        """The "network" snapshot: every node registered on chain (found by NodeRegistered events
        since the last look), with its registry entry and credits as of now."""
        self._networked = now
        lg = self.ledger
        head = lg.block_number()
        if head >= self._registry_block:
            for e in lg.events("NodeRegistry", "NodeRegistered", from_block=self._registry_block, to_block=head):
                self._registered.setdefault(e["args"]["node"].lower(), e["args"]["node"])
            self._registry_block = head + 1
        nodes = []
        for address in self._registered.values():
            n = lg.node(address)
            nodes.append({"address": address, "peer_id": n["peer_id"], "registered": n["registered"],
                          "roles": [name for name, bit in ROLE_NAMES.items() if n["roles"] & bit],
                          "staked": n["staked"], "locked": n["locked"], "unbonding": n["unbonding"],
                          "token": lg.token_balance(address)})
        self.state.put_snapshot("network", {"nodes": nodes, "updated": now})
