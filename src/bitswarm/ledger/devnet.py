"""bitswarm's embedded EVM devnet: py-evm (through eth-tester) behind an HTTP JSON-RPC endpoint on 127.0.0.1.

The chain lives in memory; what makes it survive restarts (including `kill -9`) is a journal. Every
accepted state-changing request is appended to `<data_dir>/journal.jsonl` and fsynced before its
response is sent, with everything needed to replay it bit-exactly: the signed transaction bytes and
the timestamp of the block it went into. The first line fixes the genesis timestamp. On start the
journal is replayed and every line's recorded head (block number and hash) is checked, so a journal
that no longer replays (edited, or written by another EVM version) is refused instead of silently
forking the chain.

Two things make eth-tester deterministic enough to replay: block timestamps are set explicitly
(eth-tester would stamp a block with the wall-clock time at which its *parent* was mined), and
`prevrandao` (mix_hash) is derived from the parent hash instead of `os.urandom`.

A request that fails changes nothing and is not journaled. That includes transactions that would
revert: they are executed on a throwaway copy of the pending state first and refused with the standard
revert error (code 3, `data` = revert bytes), so an error always means "nothing happened".

The first-start setup (deploying bitswarm) is all or nothing. Before its first transaction the
devnet writes `setup.pending`, holding the journal's length; while the setup runs only its deployer
(dev account 0) may change the chain; `deployment.json` is written when it returns, and only then is
the marker removed. A start that finds the marker without deployment.json (a `kill -9` mid-deployment)
cuts the journal back to the marked length and runs the setup again: the same nonces give the same
addresses, and every contract exists once. Nothing anyone else was told is lost by the cut, since
nobody else could transact after the mark.

Besides the standard methods: evm_increaseTime, evm_mine, bitswarm_deployment, bitswarm_devAccounts,
and bitswarm_fund (the faucet of `bitswarm ledger fund`: ETH and credits from dev account 0, sent as
ordinary transactions through this same endpoint).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eth.exceptions import Revert, UnrecognizedTransactionType, VMError
from eth.vm.forks.cancun import get_total_blob_gas
from eth.vm.spoof import SpoofTransaction
from eth_abi import abi
from eth_abi.exceptions import DecodingError
from eth_bloom import BloomFilter
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import _get_block_by_number, get_default_account_keys
from eth_tester.exceptions import BlockNotFound, TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils import ValidationError as EVMValidationError
from eth_utils import decode_hex, encode_hex, keccak, to_checksum_address
from rlp.exceptions import RLPException
from web3.providers.eth_tester.defaults import API_ENDPOINTS
from web3.providers.eth_tester.middleware import (
    request_formatters,
    result_formatters,
    transaction_result_formatter,
    transaction_result_remapper,
)

from bitswarm.errors import BitswarmError
from bitswarm.store.atomic import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)

CHAIN_ID = 131277322940537  # eth-tester's py-evm chain; its eth_chainId answers the same
JOURNAL_VERSION = 1
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string), what `assert ..., "reason"` reverts with
MAX_BODY = 64 * 1024 * 1024
ZERO_ADDRESS = b"\x00" * 20

# Methods that would change the chain behind the journal's back; refused rather than silently lost.
UNJOURNALED = {"evm_revert", "evm_snapshot", "testing_timeTravel", "personal_newAccount"}
# Position of the optional block argument, filled with "latest" when a client leaves it out
# (web3's formatters index into it).
BLOCK_ARG = {"eth_call": 1, "eth_getBalance": 1, "eth_getCode": 1, "eth_getTransactionCount": 1, "eth_getStorageAt": 2}
TX_ARG_METHODS = {"eth_call", "eth_estimateGas", "eth_sendTransaction"}
FEE_FIELDS = ("gas_price", "max_fee_per_gas", "max_priority_fee_per_gas")


class DevnetError(BitswarmError):
    """The devnet cannot start or run; the message says why and what to do."""


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class _ExecutionFailed(Exception):
    """An EVM execution that failed (revert, out of gas, ...), with the revert bytes when there are any."""

    def __init__(self, error: VMError, output: bytes = b""):
        self.data = bytes(output) if isinstance(error, Revert) else b""
        super().__init__(_revert_message(self.data) if isinstance(error, Revert) else str(error) or type(error).__name__)

    def rpc_error(self) -> _RpcError:
        if self.data or str(self).startswith("execution reverted"):
            return _RpcError(3, str(self), encode_hex(self.data))  # geth's shape: web3/ethers decode `data`
        return _RpcError(-32000, f"execution failed: {self}")


def _revert_message(data: bytes) -> str:
    if data[:4] == ERROR_SELECTOR:
        try:
            return f"execution reverted: {abi.decode(['string'], data[4:])[0]}"
        except (DecodingError, UnicodeDecodeError):
            pass
    return "execution reverted"


class _Backend(PyEVMBackend):
    """eth-tester's py-evm backend, made replayable and made to keep revert data."""

    def mine_blocks(self, num_blocks=1, coinbase=ZERO_ADDRESS):
        # eth-tester draws mix_hash (prevrandao) from os.urandom, which would change every block hash
        # on replay; derive it from the parent instead.
        hashes = []
        for _ in range(num_blocks):
            pending = self.chain.get_block()
            block = self.chain.mine_block(
                coinbase=coinbase,
                mix_hash=keccak(b"bitswarm-devnet-prevrandao" + pending.header.parent_hash),
                blob_gas_used=sum(get_total_blob_gas(tx) for tx in pending.transactions),
            )
            hashes.append(block.hash)
        return tuple(hashes)

    def call(self, transaction, block_number="latest"):
        # Like eth-tester's, in the context of the requested block, except that
        # - a failure keeps the raw revert bytes (eth-tester reduces them to a decoded string, and the
        #   RPC error must carry them as `data`);
        # - a call that names no fee costs the caller nothing, as on geth: eth-tester would charge
        #   30M gas at 1 gwei, so any account without ETH could not even read a balance.
        tx = dict(transaction)
        tx.setdefault("gas", self._max_available_gas())
        header = _get_block_by_number(self.chain, block_number).header
        free = not any(k in tx for k in FEE_FIELDS)
        if free:  # priced at exactly the base fee, which is credited to the caller first
            tx["max_fee_per_gas"] = tx["max_priority_fee_per_gas"] = header.base_fee_per_gas
        unsigned = self._get_normalized_and_unsigned_evm_transaction(tx, block_number)
        state = self.chain.get_vm(at_header=header).state
        snapshot = state.snapshot()
        try:
            if free:
                state.delta_balance(transaction["from"], tx["gas"] * header.base_fee_per_gas)
            computation = state.apply_transaction(SpoofTransaction(unsigned, from_=transaction["from"]))
        finally:
            state.revert(snapshot)
        if computation.is_error:
            raise _ExecutionFailed(computation.error, computation.output)
        return computation.output

    def estimate_gas(self, transaction, block_number="latest"):
        if not any(k in transaction for k in FEE_FIELDS):
            # py-evm estimates against a zero base fee; free gas lets accounts without ETH estimate too, as on geth
            transaction = {**transaction, "max_fee_per_gas": 0, "max_priority_fee_per_gas": 0}
        try:
            return super().estimate_gas(transaction, block_number)
        except TransactionFailed as exc:  # eth-tester wraps py-evm's Revert; unwrap to keep its bytes
            cause = exc.args[0] if exc.args else None
            if isinstance(cause, VMError):
                raise _ExecutionFailed(cause, cause.args[0] if isinstance(cause, Revert) and cause.args else b"") from exc
            raise


class _Journal:
    """Append-only JSON lines, one per accepted state change, fsynced before the change is acknowledged."""

    def __init__(self, path: Path):
        self.path = path
        existed = path.exists()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # Two devnets appending to one journal would interleave two chains.
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise DevnetError(f"{path.parent} is in use by another running devnet; stop it or pass another data dir") from None
        if not existed:
            fsync_dir(path.parent)

    def read(self) -> list[dict]:
        """Every complete entry; a partial last line (a write cut short by a crash) is dropped from the file."""
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            # Never acknowledged: its response is only sent after the whole line is fsynced.
            log.warning(
                "journal %s ends in a partial line (%d bytes, a write cut short); dropping it",
                self.path, len(data) - len(complete),
            )
            os.ftruncate(self.fd, len(complete))
            os.fsync(self.fd)
        entries = []
        for lineno, line in enumerate(complete.splitlines(), 1):
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "op" not in entry:
                    raise ValueError("not a journal entry")
            except ValueError as exc:
                raise DevnetError(
                    f"journal {self.path} is unreadable at line {lineno} ({exc}); it is damaged, not just cut short. "
                    f"Restore it from a backup, or move {self.path.parent} away to start a fresh chain"
                ) from None
            entries.append(entry)
        return entries

    def append(self, entry: dict) -> None:
        os.write(self.fd, json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        os.fsync(self.fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)  # also releases the lock


class Devnet:
    """One chain in `data_dir`, served on http://host:port while started."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 8545,
        host: str = "127.0.0.1",
        setup: Callable[[Devnet], dict] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        self.chain_id = CHAIN_ID
        self.dev_accounts = [(to_checksum_address(k.public_key.to_address()), k.to_hex()) for k in get_default_account_keys()]
        self.deployment: dict | None = None
        self._setup = setup
        self._lock = threading.Lock()  # every chain and journal access; journal order = chain order
        self._tester: EthereumTester | None = None
        self._journal: _Journal | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._time_offset = 0  # evm_increaseTime total, added to the wall clock for new blocks
        self._time_floor = 0  # ... and the earliest timestamp it promised the next block
        self._broken: str | None = None  # set when the journal could not be written
        self._setting_up = False  # the first-start setup is running: only its deployer may transact
        self._stop_requested = threading.Event()
        self._fund_lock = threading.Lock()

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.jsonl"

    @property
    def deployment_path(self) -> Path:
        return self.data_dir / "deployment.json"

    @property
    def setup_marker_path(self) -> Path:
        return self.data_dir / "setup.pending"

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise DevnetError(f"devnet already running at {self.url}")
        self._stop_requested.clear()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._journal = _Journal(self.journal_path)
            fresh = self._load_chain(self._undo_interrupted_setup(self._journal.read()))
            self.deployment = self._read_deployment(fresh)
            self._server = self._bind()
        except OSError as exc:
            self._close_chain()
            raise DevnetError(f"cannot use the journal {self.journal_path}: {exc.strerror or exc}") from exc
        except BaseException:
            self._close_chain()
            raise
        self.url = f"http://{self.host}:{self._server.server_address[1]}"
        # A short poll interval: stop() waits up to one interval for the serving loop to notice.
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name=f"devnet {self.url}", daemon=True
        )
        self._thread.start()
        log.info("devnet serving %s (chain id %d, block %d, data %s)", self.url, self.chain_id, self._head()[0], self.data_dir)
        if self.deployment is None and self._setup is not None:
            self._run_setup()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join()
        # A handler still running takes the lock after this and finds the devnet stopped.
        self._close_chain()
        self._stop_requested.set()

    def wait(self) -> None:
        """Block until SIGINT/SIGTERM (when called from the main thread) or until stop() is called."""
        with self._stop_on_signals():
            self._wait_for_stop()

    def serve_forever(self) -> None:
        # Signals are caught from before start(), so one that arrives while starting still stops cleanly.
        with self._stop_on_signals():
            self.start()
            try:
                self._wait_for_stop()
            finally:
                self.stop()

    def _wait_for_stop(self) -> None:
        while not self._stop_requested.wait(0.5):  # a timeout keeps the main thread responsive to signals
            pass

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        handlers = {}
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, lambda *_: self._stop_requested.set())
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _bind(self) -> ThreadingHTTPServer:
        try:
            server = ThreadingHTTPServer((self.host, self.port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DevnetError(f"port {self.port} on {self.host} is in use; pass --port or stop the other process") from None
            raise DevnetError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        server.daemon_threads = True
        server.devnet = self
        return server

    def _close_chain(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
            self._journal = None
            self._tester = None

    def _run_setup(self) -> None:
        with self._lock:  # the mark is the journal's length before the setup's first transaction
            mark = {"journal_bytes": self._journal.size(), "block": self._head()[0]}
            self._setting_up = True
        try:
            atomic_write_text(self.setup_marker_path, json.dumps(mark) + "\n")
            deployment = self._setup(self)
            if not isinstance(deployment, dict):
                raise TypeError(f"it returned {type(deployment).__name__}, not a dict")
            atomic_write_text(self.deployment_path, json.dumps(deployment, indent=2, sort_keys=True) + "\n")
            self.setup_marker_path.unlink()
            fsync_dir(self.data_dir)
        except Exception as exc:
            self.stop()
            raise DevnetError(f"devnet setup failed: {exc}") from exc
        finally:
            self._setting_up = False
        self.deployment = deployment

    def _undo_interrupted_setup(self, entries: list[dict]) -> list[dict]:
        """The journal entries to replay: all of them, unless a setup was cut short, whose
        transactions are then dropped from the journal so that the setup runs again whole."""
        try:
            mark = json.loads(self.setup_marker_path.read_text())
            size, block = int(mark["journal_bytes"]), int(mark["block"])
        except FileNotFoundError:
            return entries
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DevnetError(f"cannot read {self.setup_marker_path}: {exc}; move {self.data_dir} away to start afresh") from None
        if self.deployment_path.exists():  # the setup finished; only removing its marker was cut short
            self.setup_marker_path.unlink()
            fsync_dir(self.data_dir)
            return entries
        if self._setup is None:
            raise DevnetError(
                f"the deployment was interrupted in {self.data_dir} (setup.pending is there, deployment.json is not); "
                "start it with its setup (`bitswarm devnet`) to redo the deployment, or move the directory away"
            )
        # Cut at the mark: the entries in the journal's first `size` bytes came before the setup.
        before = self.journal_path.read_bytes()[:size]
        keep = before.count(b"\n")
        if not before.endswith(b"\n") or keep > len(entries) or entries[keep - 1].get("block") != block:
            raise DevnetError(
                f"{self.setup_marker_path} does not match {self.journal_path} (edited?); move {self.data_dir} away "
                "to start a fresh chain"
            )
        if len(entries) > keep:
            log.warning("devnet: the first-start deployment was interrupted; undoing its %d transactions and "
                        "deploying again", len(entries) - keep)
            self._journal.truncate(size)
        return entries[:keep]

    def _read_deployment(self, fresh_chain: bool) -> dict | None:
        try:
            deployment = json.loads(self.deployment_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DevnetError(f"cannot read {self.deployment_path}: {exc}; delete it to deploy again") from None
        if fresh_chain:
            # The chain starts from genesis: those contracts are on a chain that no longer exists.
            raise DevnetError(
                f"{self.deployment_path} describes contracts but the chain in {self.data_dir} is empty "
                "(was journal.jsonl deleted?); delete deployment.json to deploy again"
            )
        return deployment

    # -- chain state and journal -----------------------------------------------------------------

    def _load_chain(self, entries: list[dict]) -> bool:
        """Rebuild the chain from the journal (or begin one); True when the chain is new."""
        self._time_offset, self._time_floor, self._broken = 0, 0, None
        if not entries:
            genesis_time = int(time.time())
            self._new_chain(genesis_time)
            self._journal.append(self._with_head({"op": "genesis", "version": JOURNAL_VERSION, "timestamp": genesis_time}))
            log.info("devnet: new chain in %s", self.data_dir)
            return True
        genesis, *rest = entries
        if genesis.get("op") != "genesis" or genesis.get("version") != JOURNAL_VERSION:
            raise DevnetError(f"journal {self.journal_path} does not start with a version {JOURNAL_VERSION} genesis entry")
        self._new_chain(genesis["timestamp"])
        self._check_head(genesis, 1)
        for lineno, entry in enumerate(rest, 2):
            try:
                self._apply(entry)
            except Exception as exc:
                raise DevnetError(
                    f"journal {self.journal_path} does not replay: line {lineno} ({entry.get('op')}) failed: {exc}"
                ) from exc
            self._check_head(entry, lineno)
        log.info("devnet: replayed %d journal entries, head block %d", len(entries), self._head()[0])
        return False

    def _new_chain(self, genesis_time: int) -> None:
        backend = _Backend(genesis_parameters=PyEVMBackend.generate_genesis_params(overrides={"timestamp": genesis_time}))
        if backend.chain.chain_id != CHAIN_ID:
            raise DevnetError(f"eth-tester's chain id is {backend.chain.chain_id}, this devnet expects {CHAIN_ID}")
        self._tester = EthereumTester(backend)

    def _check_head(self, entry: dict, lineno: int) -> None:
        number, block_hash = self._head()
        if (entry.get("block"), entry.get("hash")) != (number, block_hash):
            raise DevnetError(
                f"journal {self.journal_path} does not replay: after line {lineno} the chain is at block {number} "
                f"{block_hash}, but the journal recorded block {entry.get('block')} {entry.get('hash')}. It was edited, or "
                "written by a different py-evm/eth-tester; move it away to start a fresh chain"
            )

    def _with_head(self, entry: dict) -> dict:
        number, block_hash = self._head()
        return {**entry, "block": number, "hash": block_hash}

    def _head(self) -> tuple[int, str]:
        header = self._tester.backend.chain.get_canonical_head()
        return header.block_number, encode_hex(header.hash)

    def _apply(self, entry: dict) -> Any:
        """Apply one journal entry; live requests and replay share this so they cannot drift apart."""
        op = entry["op"]
        if op == "tx":
            self._set_pending_timestamp(entry["ts"])
            return self._tester.send_raw_transaction(entry["raw"])
        if op == "mine":
            self._set_pending_timestamp(entry["ts"])
            return self._tester.mine_blocks(1)
        if op == "increase_time":
            self._time_offset += entry["seconds"]
            # Also counted from the head block, not only the wall clock: blocks mined faster than one a
            # second run ahead of the clock, and "+N seconds" must still move the chain N seconds.
            head_time = self._tester.backend.chain.get_canonical_head().timestamp
            self._time_floor = max(self._time_floor, head_time) + entry["seconds"]
            return self._time_offset
        raise ValueError(f"unknown journal op {op!r}")

    def _commit(self, entry: dict) -> None:
        """Record an applied change with the head it produced; fsynced before the caller answers."""
        try:
            self._journal.append(self._with_head(entry))
        except OSError as exc:
            # The in-memory chain is now ahead of the journal; serving on would acknowledge state
            # that a restart loses.
            self._broken = f"writing the journal {self.journal_path} failed ({exc}); restart the devnet"
            log.error("devnet: %s", self._broken)
            raise _RpcError(-32603, self._broken) from exc

    def _set_pending_timestamp(self, ts: int) -> None:
        chain = self._tester.backend.chain
        chain.header = chain.header.copy(timestamp=ts)

    def _next_timestamp(self) -> int:
        # Wall clock plus evm_increaseTime, but always after the parent (py-evm requires strictly later).
        parent = self._tester.backend.chain.get_canonical_head()
        return max(parent.timestamp + 1, int(time.time()) + self._time_offset, self._time_floor)

    # -- state-changing requests -----------------------------------------------------------------

    def _submit_raw(self, raw: bytes) -> str:
        if self._setting_up:
            self._refuse_during_setup(raw)
        ts = self._next_timestamp()
        self._set_pending_timestamp(ts)
        self._preflight(raw)
        entry = {"op": "tx", "raw": encode_hex(raw), "ts": ts}
        tx_hash = self._apply(entry)
        self._commit(entry)
        return tx_hash

    def _preflight(self, raw: bytes) -> None:
        """Run the transaction on a throwaway copy of the pending block's state; refuse it if it would fail."""
        if raw[:1] == b"\x03":
            return  # blob transactions carry a sidecar only eth-tester knows how to strip
        vm = self._tester.backend.chain.get_vm()
        try:
            tx = vm.get_transaction_builder().decode(raw)
        except (RLPException, UnrecognizedTransactionType, EVMValidationError) as exc:
            raise _RpcError(-32602, f"invalid params: not a signed transaction ({exc})") from None
        state = vm.state
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(tx)
        finally:
            state.revert(snapshot)
        if computation.is_error:
            raise _ExecutionFailed(computation.error, computation.output)

    def _refuse_during_setup(self, raw: bytes | None) -> None:
        """While the first-start setup runs, only its deployer changes the chain: an interrupted
        setup is undone by cutting the journal back, which must not take anyone else's change."""
        sender = None
        if raw is not None and raw[:1] != b"\x03":
            try:
                sender = self._tester.backend.chain.get_vm().get_transaction_builder().decode(raw).sender
            except (RLPException, UnrecognizedTransactionType, EVMValidationError) as exc:
                raise _RpcError(-32602, f"invalid params: not a signed transaction ({exc})") from None
        if sender is None or to_checksum_address(sender) != self.dev_accounts[0][0]:
            raise _RpcError(-32000, "the devnet is deploying bitswarm (first start); only its deployer may change the "
                                    "chain until bitswarm_deployment answers. Try again in a moment")

    def _sign_dev_transaction(self, tx: dict) -> bytes:
        """eth_sendTransaction: eth-tester signs with the dev key; the signed bytes are what gets journaled."""
        if tx["from"].lower() not in {address.lower() for address, _ in self.dev_accounts}:
            raise _RpcError(
                -32602, "eth_sendTransaction signs only for the dev accounts; sign locally and use eth_sendRawTransaction"
            )
        if "gas" not in tx:
            tx["gas"] = self._tester.estimate_gas({k: v for k, v in tx.items() if k != "nonce"})
        self._tester.validator.validate_inbound_transaction(tx, txn_internal_type="send")
        normalized = self._tester.normalizer.normalize_inbound_transaction(tx)
        return self._tester.backend._get_normalized_and_signed_evm_transaction(normalized).encode()

    # -- JSON-RPC ----------------------------------------------------------------------------------

    def _handle_body(self, body: bytes) -> Any:
        """One HTTP body -> the JSON reply (None when every request was a notification)."""
        try:
            request = json.loads(body)
        except ValueError as exc:
            return _error_reply(None, _RpcError(-32700, f"parse error: {exc}"))
        if isinstance(request, list):
            if not request:
                return _error_reply(None, _RpcError(-32600, "invalid request: empty batch"))
            replies = [r for r in map(self._handle_request, request) if r is not None]
            return replies or None
        return self._handle_request(request)

    def _handle_request(self, request: Any) -> dict | None:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            rid = request.get("id") if isinstance(request, dict) else None
            return _error_reply(rid, _RpcError(-32600, "invalid request: expected an object with a string 'method'"))
        rid = request.get("id")
        try:
            reply = {"jsonrpc": "2.0", "id": rid, "result": self._dispatch(request["method"], request.get("params", []))}
        except _RpcError as exc:
            reply = _error_reply(rid, exc)
        except Exception as exc:
            log.exception("devnet: %s failed", request["method"])
            reply = _error_reply(rid, _RpcError(-32603, f"internal error: {type(exc).__name__}: {exc}"))
        return reply if "id" in request else None

    def _dispatch(self, method: str, params: Any) -> Any:
        if not isinstance(params, list):
            raise _RpcError(-32602, "invalid params: only positional (array) params are supported")
        if method == "bitswarm_fund":
            return self._rpc_fund(params)  # not under the lock: the faucet sends its transactions to this server
        with self._lock:
            if self._tester is None:
                raise _RpcError(-32000, "the devnet is stopped")
            if self._broken:
                raise _RpcError(-32603, self._broken)
            try:
                return self._call(method, params)
            except _RpcError:
                raise
            except _ExecutionFailed as exc:
                raise exc.rpc_error() from None
            except EVMValidationError as exc:  # py-evm refused the transaction (nonce, balance, fees)
                raise _RpcError(-32000, str(exc)) from None
            except BlockNotFound as exc:
                raise _RpcError(-32000, f"header not found: {exc}") from None
            except (TesterValidationError, RLPException, TypeError, ValueError, IndexError, KeyError) as exc:
                raise _RpcError(-32602, f"invalid params for {method}: {exc}") from None

    def _call(self, method: str, params: list) -> Any:
        local = {
            "eth_sendRawTransaction": self._rpc_send_raw,
            "eth_sendTransaction": self._rpc_send_transaction,
            "eth_gasPrice": self._rpc_gas_price,
            "evm_mine": self._rpc_mine,
            "evm_increaseTime": self._rpc_increase_time,
            "net_version": lambda p: str(self.chain_id),
            "bitswarm_deployment": lambda p: self.deployment,
            "bitswarm_devAccounts": lambda p: [address for address, _ in self.dev_accounts],
        }.get(method)
        if local is not None:
            return local(params)
        if method in UNJOURNALED:
            raise _RpcError(-32601, f"{method} is not supported by the bitswarm devnet (it would not survive a restart)")
        namespace, _, endpoint = method.partition("_")
        delegate = API_ENDPOINTS.get(namespace, {}).get(endpoint)
        if delegate is None:
            raise _RpcError(-32601, f"method not found: {method}")
        try:
            result = delegate(self._tester, self._prepare_params(method, params))
        except NotImplementedError:
            raise _RpcError(-32601, f"method not implemented by the devnet: {method}") from None
        return _format_result(method, result)

    def _prepare_params(self, method: str, params: list) -> list:
        """JSON-RPC wire params -> what eth-tester takes, via web3's eth-tester request formatters."""
        params = list(params)
        if method in BLOCK_ARG and len(params) == BLOCK_ARG[method]:
            params.append("latest")
        if method in TX_ARG_METHODS and params and isinstance(params[0], dict):
            tx = dict(params[0])
            if "input" in tx:  # newer clients name the calldata `input`
                tx.setdefault("data", tx["input"])
                del tx["input"]
            tx.setdefault("from", self.dev_accounts[0][0])  # as web3's eth-tester provider does
            params[0] = tx
        formatter = request_formatters.get(method)
        params = list(formatter(params)) if formatter else params
        if method in ("eth_getStorageAt", "eth_estimateGas") and len(params) > BLOCK_ARG.get(method, 1):
            i = BLOCK_ARG.get(method, 1)  # web3 leaves these block numbers as hex strings
            params[i] = _block_number(params[i])
        return params

    def _rpc_send_raw(self, params: list) -> str:
        (raw,) = params
        return self._submit_raw(decode_hex(raw))

    def _rpc_send_transaction(self, params: list) -> str:
        (tx,) = self._prepare_params("eth_sendTransaction", params)
        return self._submit_raw(self._sign_dev_transaction(tx))

    def _rpc_fund(self, params: list) -> dict:
        """bitswarm_fund(address, eth_wei, credits): ETH from dev account 0 and freshly minted credits."""
        from bitswarm.ledger.errors import LedgerError
        from bitswarm.ledger.faucet import fund

        try:
            address, eth_wei, credits = (_quantity(p) if i else p for i, p in enumerate(params))
        except ValueError:
            raise _RpcError(-32602, "invalid params: bitswarm_fund takes [address, eth_wei, credits]") from None
        if self.deployment is None:
            raise _RpcError(-32000, "this devnet has no bitswarm deployment (it was started without a setup hook)")
        with self._fund_lock:  # one at a time: each funding spends dev account 0's next nonces
            try:
                return fund(self.url, self.dev_accounts[0][1], self.deployment, address, eth_wei, credits)
            except LedgerError as exc:
                raise _RpcError(-32602, str(exc)) from None

    def _rpc_gas_price(self, params: list) -> str:
        # eth-tester answers a constant 1 gwei, which legacy transactions cannot pay once the base fee
        # climbs above it; base fee of the next block plus a 1 gwei tip always can.
        return hex(self._tester.backend.chain.header.base_fee_per_gas + 10**9)

    def _rpc_mine(self, params: list) -> str:
        if params:
            raise _RpcError(-32602, "invalid params: evm_mine takes no parameters")
        if self._setting_up:
            self._refuse_during_setup(None)
        entry = {"op": "mine", "ts": self._next_timestamp()}
        self._apply(entry)
        self._commit(entry)
        return "0x0"

    def _rpc_increase_time(self, params: list) -> int:
        (seconds,) = params
        seconds = _quantity(seconds)
        if seconds < 0:
            raise _RpcError(-32602, "invalid params: evm_increaseTime takes a non-negative number of seconds")
        if self._setting_up:
            self._refuse_during_setup(None)
        entry = {"op": "increase_time", "seconds": seconds}
        total = self._apply(entry)
        self._commit(entry)
        return total


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no idle keep-alive thread outlives stop().
    server_version = "bitswarm-devnet"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413, "request body too large")
            return
        reply = self.server.devnet._handle_body(self.rfile.read(length))
        if reply is None:
            self.send_response(204)
            self.end_headers()
            return
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("devnet http: " + format, *args)


# -- result formatting ------------------------------------------------------------------------------


def _format_result(method: str, result: Any) -> Any:
    """eth-tester's Python values -> JSON-RPC wire values (camelCase keys, hex quantities)."""
    formatter = result_formatters.get(method)
    if formatter is not None:
        result = formatter(result)
    if isinstance(result, dict):
        if method in ("eth_getBlockByNumber", "eth_getBlockByHash"):
            result = _fix_block(result)
        elif method == "eth_getTransactionByHash" or method.startswith("eth_getTransactionByBlock"):
            result = _fix_transaction(result)
        elif method == "eth_getTransactionReceipt":
            result = _fix_receipt(result)
    return _wire(result)


def _fix_block(block: dict) -> dict:
    block = dict(block)
    block["logsBloom"] = _bloom_hex(block.get("logsBloom", 0))
    block["transactions"] = [_fix_transaction(t) if isinstance(t, dict) else t for t in block["transactions"]]
    return block


def _fix_transaction(tx: dict) -> dict:
    # web3 remaps transactions it is handed directly, not the ones inside a full block.
    tx = dict(transaction_result_remapper(transaction_result_formatter(tx)))
    if "y_parity" in tx:
        tx["yParity"] = tx.pop("y_parity")
    return tx


def _fix_receipt(receipt: dict) -> dict:
    receipt = dict(receipt)
    receipt.pop("state_root", None)  # eth-tester puts the status byte here; post-Byzantium receipts have no root
    if receipt.get("to") == "":
        receipt["to"] = None
    bloom = BloomFilter()
    for entry in receipt.get("logs", []):
        bloom.add(decode_hex(entry["address"]))
        for topic in entry.get("topics", []):
            bloom.add(decode_hex(topic) if isinstance(topic, str) else bytes(topic))
    receipt["logsBloom"] = _bloom_hex(int(bloom))
    return receipt


def _bloom_hex(value: int | str) -> str:
    return value if isinstance(value, str) else "0x" + value.to_bytes(256, "big").hex()


def _wire(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return encode_hex(value)
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    return value


def _quantity(value: Any) -> int:
    """A JSON-RPC number: a hex string or (as hardhat also accepts) a plain JSON integer."""
    if isinstance(value, str):
        return int(value, 16)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"not a number: {value!r}")


def _block_number(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    return value


def _error_reply(rid: Any, exc: _RpcError) -> dict:
    error = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return {"jsonrpc": "2.0", "id": rid, "error": error}
