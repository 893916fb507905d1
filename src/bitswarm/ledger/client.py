"""Typed client for bitswarm's contracts over any EVM JSON-RPC endpoint (web3 + eth-account).

Transactions are signed locally, so the endpoint never holds a key: the embedded devnet, hardhat
or a public chain all look the same. Every transaction is gas-estimated first, which is where a
chain reports the revert reason; that reason is what `RevertError` carries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from bitswarm.ledger.compile import compile_contract
from bitswarm.ledger.deployment import Deployment
from bitswarm.ledger.errors import ConnectionFailed, LedgerError, RevertError
from bitswarm.ledger.units import CREDIT, format_units  # noqa: F401 - CREDIT is still imported from here

log = logging.getLogger(__name__)

from bitswarm.ledger.codes import (  # noqa: F401 - imported from here too
    DISPUTE_PHASE,
    JOB_STATUS,
    KINDS,
    ROLE_NAMES,
    ROLE_REFEREE,
    ROLE_SOLVER,
    ROLE_SWARM,
    ROLE_VERIFIER,
)


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    block: int
    gas_used: int
    events: list[dict] = field(default_factory=list)

    def event(self, name: str) -> dict:
        for ev in self.events:
            if ev["event"] == name:
                return ev["args"]
        raise LedgerError(f"transaction {self.tx_hash} emitted no {name} event")


def cid_bytes(cid: str | bytes) -> bytes:
    """bitswarm CID ("sha256:<hex>") or a bare 32-byte hex/bytes -> the bytes32 the contracts hold."""
    if isinstance(cid, bytes):
        raw = cid
    else:
        text = cid.removeprefix("sha256:").removeprefix("0x")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise LedgerError(f"not a CID or 32-byte hex value: {cid!r}") from None
    if len(raw) != 32:
        raise LedgerError(f"expected 32 bytes (a sha256 CID), got {len(raw)}: {cid!r}")
    return raw


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError))


def _revert_reason(exc: BaseException) -> str | None:
    if isinstance(exc, ContractLogicError):
        msg = getattr(exc, "message", None) or str(exc)
        return msg.removeprefix("execution reverted: ").strip() or "execution reverted"
    if isinstance(exc, Web3RPCError):
        msg = getattr(exc, "message", None) or str(exc)
        if "revert" in msg.lower():
            return msg.split("reverted:", 1)[-1].strip().strip("'\"") or msg
    return None


class Ledger:
    """One account's view of the deployed contracts; every public method is one call or transaction."""

    def __init__(
        self,
        rpc_url: str,
        deployment: Deployment,
        account: LocalAccount | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        receipt_timeout: float = 120.0,
    ):
        self.rpc_url = rpc_url
        self.deployment = deployment
        self.account = account
        self.retries = retries
        self.receipt_timeout = receipt_timeout
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self._contracts = {
            name: self.w3.eth.contract(address=Web3.to_checksum_address(addr), abi=compile_contract(name).abi)
            for name, addr in deployment.contracts.items()
        }
        self._nonce: int | None = None
        self._nonce_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------

    def _rpc(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one RPC, retrying dropped connections with backoff; anything else propagates."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classify, then re-raise
                if not _is_connection_error(exc):
                    raise
                if attempt == self.retries:
                    raise ConnectionFailed(
                        f"no answer from the chain at {self.rpc_url} ({what}): {exc}. "
                        "Is the node running? Start the embedded one with `bitswarm devnet`, "
                        "or set rpc_url (`bitswarm config set rpc_url URL` or BITSWARM_RPC)."
                    ) from exc
                delay = 0.2 * 2**attempt
                log.warning("chain connection dropped during %s; retrying in %.1fs", what, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def contract(self, name: str):
        try:
            return self._contracts[name]
        except KeyError:
            raise LedgerError(
                f"contract {name} is not in the deployment (have: {', '.join(sorted(self._contracts))})"
            ) from None

    @property
    def address(self) -> str:
        if self.account is None:
            raise LedgerError("this action needs an account; create one with `bitswarm identity new`")
        return self.account.address

    def call(self, name: str, fn: str, *args: Any) -> Any:
        func = getattr(self.contract(name).functions, fn)(*args)
        try:
            return self._rpc(f"{name}.{fn}", lambda: func.call({"from": self.account.address} if self.account else {}))
        except (ContractLogicError, Web3RPCError) as exc:
            reason = _revert_reason(exc)
            if reason is None:
                raise
            raise RevertError(f"{name}.{fn}", reason) from exc

    def _next_nonce(self) -> int:
        with self._nonce_lock:
            if self._nonce is None:
                self._nonce = self._rpc("nonce", lambda: self.w3.eth.get_transaction_count(self.address, "pending"))
            n = self._nonce
            self._nonce += 1
            return n

    def _resync_nonce(self) -> None:
        with self._nonce_lock:
            self._nonce = None

    def transact(self, name: str, fn: str, *args: Any) -> Receipt:
        """Estimate, sign, send, wait: returns the receipt with its decoded events, or raises RevertError."""
        action = f"{name}.{fn}"
        func = getattr(self.contract(name).functions, fn)(*args)
        sender = self.address
        try:
            gas = self._rpc(action, lambda: func.estimate_gas({"from": sender}))
        except (ContractLogicError, Web3RPCError) as exc:
            reason = _revert_reason(exc)
            if reason is None:
                raise LedgerError(f"{action} failed: {exc}") from exc
            raise RevertError(action, reason) from exc
        receipt, tx_hash = self._sign_send_wait(action, lambda tx: func.build_transaction(
            {**tx, "from": sender, "gas": int(gas * 1.25) + 10_000}))
        if receipt["status"] != 1:
            raise RevertError(action, self._reason_of_failed(func, sender, receipt["blockNumber"]))
        return Receipt(
            tx_hash=tx_hash.hex() if isinstance(tx_hash, bytes) else str(tx_hash),
            block=receipt["blockNumber"],
            gas_used=receipt["gasUsed"],
            events=self._decode_events(receipt),
        )

    def send_eth(self, to: str, value: int) -> Receipt:
        """A plain ETH transfer (gas money), through the same nonce and retry handling."""
        receipt, tx_hash = self._sign_send_wait("ETH transfer", lambda tx: {**tx, "to": to, "value": value, "gas": 21_000})
        return Receipt(tx_hash=tx_hash.hex(), block=receipt["blockNumber"], gas_used=receipt["gasUsed"])

    def _sign_send_wait(self, action: str, build: Callable[[dict], dict]):
        """Sign what `build` makes of (nonce, gas price, chain id), send it and wait for its
        receipt; a refused nonce (another client of this account got there first) resyncs."""
        for attempt in range(3):
            nonce = self._next_nonce()
            tx = build({"nonce": nonce, "gasPrice": self._rpc("gas price", lambda: self.w3.eth.gas_price),
                        "chainId": self.deployment.chain_id})
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = self._send(signed.raw_transaction, signed.hash)
                break
            except Web3RPCError as exc:
                msg = str(exc).lower()
                if "nonce" in msg and attempt < 2:
                    log.warning("nonce %d refused (%s); resynchronising", nonce, exc)
                    self._resync_nonce()
                    continue
                reason = _revert_reason(exc)
                if reason is not None:
                    raise RevertError(action, reason) from exc
                raise LedgerError(f"{action}: the chain refused the transaction: {exc}") from exc
        return self._wait(tx_hash, action), tx_hash

    def _send(self, raw: bytes, expected_hash: bytes) -> bytes:
        """Send once; after a dropped connection the transaction may already be in, so look first."""
        for attempt in range(self.retries + 1):
            try:
                return self.w3.eth.send_raw_transaction(raw)
            except Exception as exc:  # noqa: BLE001
                if not _is_connection_error(exc):
                    raise
                try:
                    if self.w3.eth.get_transaction(expected_hash) is not None:
                        return expected_hash
                except Exception:  # noqa: BLE001 - not found or still down: resend below
                    pass
                if attempt == self.retries:
                    raise ConnectionFailed(f"no answer from the chain at {self.rpc_url} while sending: {exc}") from exc
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _wait(self, tx_hash: bytes, action: str) -> Any:
        try:
            return self._rpc(
                action,
                lambda: self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout, poll_latency=0.05),
            )
        except TimeExhausted as exc:
            raise LedgerError(f"{action}: not mined within {self.receipt_timeout:.0f}s (tx {tx_hash.hex()})") from exc

    def _reason_of_failed(self, func, sender: str, block: int) -> str:
        try:
            func.call({"from": sender}, block_identifier=block - 1)
        except (ContractLogicError, Web3RPCError) as exc:
            return _revert_reason(exc) or str(exc)
        return "the transaction failed on chain (out of gas?)"

    def _decode_events(self, receipt) -> list[dict]:
        events = []
        by_address = {c.address.lower(): (n, c) for n, c in self._contracts.items()}
        for entry in receipt["logs"]:
            hit = by_address.get(entry["address"].lower())
            if hit is None:
                continue
            contract_name, contract = hit
            for ev_abi in (a for a in contract.abi if a["type"] == "event"):
                try:
                    decoded = getattr(contract.events, ev_abi["name"])().process_log(entry)
                except Exception:  # noqa: BLE001 - not this event's topic
                    continue
                events.append({"contract": contract_name, "event": decoded["event"], "args": dict(decoded["args"])})
                break
        return events

    # -- chain ----------------------------------------------------------------------------------

    def block_number(self) -> int:
        return self._rpc("block number", lambda: self.w3.eth.block_number)

    def timestamp(self) -> int:
        return self._rpc("block", lambda: self.w3.eth.get_block("latest")["timestamp"])

    def eth_balance(self, address: str | None = None) -> int:
        return self._rpc("balance", lambda: self.w3.eth.get_balance(address or self.address))

    def increase_time(self, seconds: int) -> None:
        """Dev chains only (devnet, hardhat): move the clock and mine a block."""
        self._rpc("evm_increaseTime", lambda: self.w3.provider.make_request("evm_increaseTime", [int(seconds)]))
        self._rpc("evm_mine", lambda: self.w3.provider.make_request("evm_mine", []))

    def events(
        self, name: str, event: str, from_block: int = 0, to_block: int | str = "latest", **filters: Any
    ) -> list[dict]:
        ev = getattr(self.contract(name).events, event)
        logs = self._rpc(
            f"{name}.{event} logs",
            lambda: ev.get_logs(from_block=from_block, to_block=to_block, argument_filters=filters or None),
        )
        return [{"event": lg["event"], "block": lg["blockNumber"], "args": dict(lg["args"])} for lg in logs]

    def follow(
        self, names: Sequence[str] | None = None, from_block: int = 0, poll_s: float = 0.5, stop: Callable[[], bool] | None = None
    ) -> Iterator[dict]:
        """Every event of the named contracts from `from_block` on, in chain order, polling for new blocks."""
        names = list(names or self._contracts)
        next_block = from_block
        while stop is None or not stop():
            head = self.block_number()
            if head >= next_block:
                batch = []
                for name in names:
                    c = self.contract(name)
                    for ev_abi in (a for a in c.abi if a["type"] == "event"):
                        for lg in self._rpc(
                            "logs",
                            lambda ev_abi=ev_abi, c=c: getattr(c.events, ev_abi["name"]).get_logs(
                                from_block=next_block, to_block=head
                            ),
                        ):
                            batch.append(
                                {"contract": name, "event": lg["event"], "block": lg["blockNumber"],
                                 "log_index": lg["logIndex"], "args": dict(lg["args"])}
                            )
                yield from sorted(batch, key=lambda e: (e["block"], e["log_index"]))
                next_block = head + 1
            else:
                time.sleep(poll_s)

    # -- token ----------------------------------------------------------------------------------

    def token_balance(self, address: str | None = None) -> int:
        return self.call("Token", "balanceOf", address or self.address)

    def approve(self, spender_contract: str, amount: int) -> Receipt:
        return self.transact("Token", "approve", self.contract(spender_contract).address, amount)

    def transfer(self, to: str, amount: int) -> Receipt:
        return self.transact("Token", "transfer", to, amount)

    def mint(self, to: str, amount: int) -> Receipt:
        return self.transact("Token", "mint", to, amount)

    def _ensure_allowance(self, spender_contract: str, amount: int) -> None:
        spender = self.contract(spender_contract).address
        if self.call("Token", "allowance", self.address, spender) < amount:
            self.approve(spender_contract, amount)

    # -- registry -------------------------------------------------------------------------------

    def register(self, peer_id: str, roles: int) -> Receipt:
        return self.transact("NodeRegistry", "register", peer_id, roles)

    def stake(self, amount: int) -> Receipt:
        self._ensure_allowance("NodeRegistry", amount)
        return self.transact("NodeRegistry", "stake", amount)

    def request_unbond(self, amount: int) -> Receipt:
        return self.transact("NodeRegistry", "request_unbond", amount)

    def withdraw(self) -> Receipt:
        return self.transact("NodeRegistry", "withdraw")

    def node(self, address: str | None = None) -> dict:
        return self._struct("NodeRegistry", "get_node", address or self.address)

    # -- job market -----------------------------------------------------------------------------

    def post_job(
        self, spec_cid: str | bytes, kind: str, num_leaves: int, bounty: int, solver_stake: int, challenge_window: int,
        *, ops_per_leaf: int, verify_fee: int = 0,
    ) -> int:
        """`ops_per_leaf` is the number of traced ops in one leaf's computation (a function of
        the spec); the contract takes it right after `num_leaves`. `verify_fee` (< bounty) is
        reserved out of the bounty for the verifiers whose attestation matches the solver's."""
        if kind not in KINDS:
            raise LedgerError(f"job kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if not 0 <= verify_fee < bounty:
            raise LedgerError(f"verify_fee must be at least 0 and below the bounty ({bounty}), not {verify_fee}")
        self._ensure_allowance("JobMarket", bounty)
        rc = self.transact(
            "JobMarket", "post_job", cid_bytes(spec_cid), KINDS[kind], num_leaves, ops_per_leaf, bounty, solver_stake,
            challenge_window, verify_fee,
        )
        return rc.event("JobPosted")["job_id"]

    def cancel_job(self, job_id: int) -> Receipt:
        return self.transact("JobMarket", "cancel_job", job_id)

    def claim_job(self, job_id: int) -> Receipt:
        return self.transact("JobMarket", "claim_job", job_id)

    def commit_result(self, job_id: int, result_root: str | bytes, result_cid: str | bytes, result_leaf: str | bytes,
                      proof: Sequence[str | bytes]) -> Receipt:
        """Commit the result's root and its last leaf (the result itself) with that leaf's proof."""
        return self.transact("JobMarket", "commit_result", job_id, cid_bytes(result_root), cid_bytes(result_cid),
                             cid_bytes(result_leaf), [cid_bytes(p) for p in proof])

    def finalize(self, job_id: int) -> Receipt:
        return self.transact("JobMarket", "finalize", job_id)

    def challenge(self, job_id: int, challenger_root: str | bytes, challenger_leaf: str | bytes,
                  proof: Sequence[str | bytes]) -> Receipt:
        """Challenge with this side's root and its last leaf (which must differ from the solver's)."""
        return self.transact("JobMarket", "challenge", job_id, cid_bytes(challenger_root), cid_bytes(challenger_leaf),
                             [cid_bytes(p) for p in proof])

    def respond_step(self, job_id: int, leaf: str | bytes, proof: Sequence[str | bytes]) -> Receipt:
        return self.transact("JobMarket", "respond_step", job_id, cid_bytes(leaf), [cid_bytes(p) for p in proof])

    def commit_trace(self, job_id: int, trace_root: str | bytes, n_ops: int) -> Receipt:
        return self.transact("JobMarket", "commit_trace", job_id, cid_bytes(trace_root), n_ops)

    def respond_op(self, job_id: int, digest: str | bytes, proof: Sequence[str | bytes]) -> Receipt:
        return self.transact("JobMarket", "respond_op", job_id, cid_bytes(digest), [cid_bytes(p) for p in proof])

    def vote(self, job_id: int, solver_wins: bool) -> Receipt:
        return self.transact("JobMarket", "vote", job_id, solver_wins)

    def settle(self, job_id: int) -> Receipt:
        return self.transact("JobMarket", "settle", job_id)

    def release_vote(self, job_id: int, referee: str | None = None) -> Receipt:
        """After a dispute is settled: unlock a referee's vote stake (slashed to the winner if it
        voted for the loser). Anyone may release anyone's; the default is this account's."""
        return self.transact("JobMarket", "release_vote", job_id, referee or self.address)

    def vote_weight(self, job_id: int, referee: str | None = None) -> int:
        """The stake `referee` voted with and has not yet had released (0 if none)."""
        return self.call("JobMarket", "vote_weight", job_id, referee or self.address)

    def job(self, job_id: int) -> dict:
        """The job record, with its verification pay from the audit record (which the contract
        keeps apart so that dispute calls do not read it): verify_fee, audit_leaf (drawn at
        commit when verify_fee > 0) and reveal_deadline."""
        audit = self.audit(job_id)
        return {**self._struct("JobMarket", "get_job", job_id),
                **{k: audit[k] for k in ("verify_fee", "audit_leaf", "reveal_deadline")}}

    # -- verification pay (verify.attest computes the values) -------------------------------------

    def attest(self, job_id: int, commitment: str | bytes) -> Receipt:
        """As a verifier, within the challenge window: commit to keccak256(attestation ‖ this
        address) (verify.attest.commitment). Locks the market's min_stake until the job settles."""
        return self.transact("JobMarket", "attest", job_id, cid_bytes(commitment))

    def reveal(self, job_id: int, attestation: str | bytes) -> Receipt:
        """After the challenge window, before the job's reveal_deadline: the solver reveals its
        attestation of the audit leaf, an attester the one its commitment binds."""
        return self.transact("JobMarket", "reveal", job_id, cid_bytes(attestation))

    def attestation_of(self, job_id: int, address: str | None = None) -> dict:
        """{commitment, value, revealed} of `address` (default: this account) for the job."""
        return self._struct("JobMarket", "get_attestation", job_id, address or self.address)

    def audit(self, job_id: int) -> dict:
        """The job's verification pay and round: {verify_fee, audit_leaf, reveal_deadline,
        solver_value, solver_revealed, attesters, revealed}."""
        return self._struct("JobMarket", "get_audit", job_id)

    def attesters(self, job_id: int) -> list[str]:
        """The job's attesters, in the order they attested."""
        return [self.call("JobMarket", "attester_at", job_id, i) for i in range(self.audit(job_id)["attesters"])]

    def dispute(self, job_id: int) -> dict:
        return self._struct("JobMarket", "get_dispute", job_id)

    # -- swarm ----------------------------------------------------------------------------------

    # A submission's life: open (stake locked, refutable) -> released, or refuting -> released/refuted.
    SWARM_STATUS = {0: "absent", 1: "open", 2: "refuting", 3: "released", 4: "refuted"}

    @staticmethod
    def swarm_reward_units(reward: float) -> int:
        """A reward in [0, 1] as the contract holds it: fixed point, 1e6 = 1.0. Whoever re-scores a
        claim converts its own score with this same function, so equal scores give equal units."""
        if not (isinstance(reward, (int, float)) and 0.0 <= reward <= 1.0):
            raise LedgerError(f"a swarm reward is a number in [0, 1], not {reward!r}")
        return round(reward * 1_000_000)

    def swarm_submit(self, round_: int, rollout_cid: str | bytes, reward: float, step_root: str | bytes) -> Receipt:
        """Record this node's round; locks swarm_stake of its free stake until the claim settles."""
        units = self.swarm_reward_units(reward)
        try:
            return self.transact("SwarmCoordinator", "submit", round_, cid_bytes(rollout_cid), units, cid_bytes(step_root))
        except RevertError as exc:
            if exc.reason in ("swarm: not enough free stake", "swarm: not a swarm node"):
                self.swarm_check_stake()  # says it in words
            raise

    def swarm_check_stake(self) -> None:
        """Raise LedgerError, saying what to do, unless this account can back a swarm submission."""
        need = self.swarm_stake()
        node = self.node()
        stake_cmd = f"`bitswarm node register --roles swarm --stake {format_units(need)}`"
        if not node["registered"] or not node["roles"] & ROLE_SWARM:
            raise LedgerError(
                f"{self.address} is not registered as a swarm node, so the SwarmCoordinator refuses its rounds: "
                f"register with {stake_cmd} (list its other roles in --roles too, to keep them)"
            )
        free = node["staked"] - node["locked"]
        if free < need:
            raise LedgerError(
                f"{self.address} has {format_units(free)} credits of free stake ({format_units(node['staked'])} staked, "
                f"{format_units(node['locked'])} locked), but each swarm submission locks {format_units(need)} credits until "
                f"its refutation window closes: stake more with {stake_cmd}, or wait for earlier rounds to be released"
            )

    def swarm_stake(self) -> int:
        return self.call("SwarmCoordinator", "swarm_stake")

    def swarm_advance_round(self) -> Receipt:
        return self.transact("SwarmCoordinator", "advance_round")

    def swarm_round(self) -> int:
        return self.call("SwarmCoordinator", "current_round")

    def swarm_window_end(self, round_: int) -> int:
        """When `round_`'s refutation window closes (2**256-1 while the round runs)."""
        return self.call("SwarmCoordinator", "window_end", round_)

    def swarm_submission(self, round_: int, peer: str | None = None) -> dict:
        sub = self._struct("SwarmCoordinator", "get_submission", round_, peer or self.address)
        return {**sub, "status": self.SWARM_STATUS[sub["status"]]}

    def swarm_refutation(self, round_: int, peer: str) -> dict:
        return self._struct("SwarmCoordinator", "get_refutation", round_, peer)

    def swarm_refute(self, round_: int, peer: str) -> Receipt:
        """Dispute `peer`'s claimed reward for `round_`; locks swarm_stake of this account's stake."""
        return self.transact("SwarmCoordinator", "refute", round_, peer)

    def swarm_vote(self, round_: int, peer: str, refuted: bool) -> Receipt:
        """As a referee: locks this account's whole free stake as the vote's weight."""
        return self.transact("SwarmCoordinator", "vote", round_, peer, refuted)

    def swarm_settle_refutation(self, round_: int, peer: str) -> Receipt:
        return self.transact("SwarmCoordinator", "settle_refutation", round_, peer)

    def swarm_release(self, round_: int, peer: str | None = None) -> Receipt:
        """Unlock an unrefuted submission's stake after its window; anyone's, by default this account's."""
        return self.transact("SwarmCoordinator", "release", round_, peer or self.address)

    def swarm_release_vote(self, round_: int, peer: str, referee: str | None = None) -> Receipt:
        return self.transact("SwarmCoordinator", "release_vote", round_, peer, referee or self.address)

    # -- helpers --------------------------------------------------------------------------------

    def _struct(self, name: str, fn: str, *args: Any) -> dict:
        """A view returning a struct, as a dict keyed by the struct's field names."""
        value = self.call(name, fn, *args)
        abi = next(a for a in self.contract(name).abi if a.get("name") == fn and a["type"] == "function")
        out = abi["outputs"][0]
        if "components" not in out:
            return value
        return {c["name"]: v for c, v in zip(out["components"], value)}

