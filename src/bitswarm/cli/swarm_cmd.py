"""`bitswarm swarm`: collective RL post-training (SAPO) on this machine, or joined over libp2p."""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from bitswarm.cli.output import JSON_HELP, UserError, emit_json, err, out, reporting, stages
from bitswarm.cli.state import state

app = typer.Typer(help="Collective RL post-training: peers share rollouts and learn from each other.",
                  no_args_is_help=True)

TRANSPORTS = ("memory", "hivemind")


def _settings(local, external, group_size, max_new_tokens, temperature, lr, backend, task_seed):
    from bitswarm.swarm.peer import PeerSettings

    if backend not in ("repro", "native"):
        raise UserError(f"--backend must be repro or native, not {backend!r}")
    if local < 1:
        raise UserError("--local must be at least 1 (a peer shares its own rollouts)")
    return PeerSettings(local=local, external=external, group_size=group_size, max_new_tokens=max_new_tokens,
                        temperature=temperature, lr=lr, backend=backend, task_seed=task_seed)


def _mix(tasks: str):
    from bitswarm.jobs.tasks import TaskError, TaskMix, resolve_tasks

    try:
        return TaskMix(resolve_tasks(tasks))
    except TaskError as exc:
        raise UserError(str(exc)) from None


def _require_model(store, model: str) -> None:
    if not store.has(model):
        raise UserError(f"model {model} is not in the store; import one with `bitswarm model import`")


def _print_round(report: dict) -> None:
    used = f"{report['local_groups']} local + {report['external_groups']} external groups"
    chain = "  recorded on chain" if report.get("submitted") else ""
    err.print(f"round {report['round']:>3}  {report['peer']:<10} reward {report['reward']:.3f}  "
              f"{used if report['updated'] else 'no informative group: no update'}  {report['seconds']:.1f}s{chain}",
              highlight=False)


def _open_state(st, kind: str, defn: dict, workdir: Path | None):
    """The swarm's state folder: <home>/swarm/<kind>-<key>, or --workdir when given (which then
    must hold this swarm or nothing: its files are never mixed with another swarm's)."""
    from bitswarm.swarm import state as swarm_state

    if workdir is not None:
        try:
            return swarm_state.open_state(workdir.expanduser().absolute(), defn)
        except swarm_state.SwarmStateError as exc:
            raise UserError(f"--workdir: {exc} (without --workdir, each swarm gets a folder of its own "
                            f"under {st.paths.swarms})") from None
    key = swarm_state.key_of(defn)
    return swarm_state.open_state(st.paths.swarm(kind, key), defn, st.paths.swarm_states(kind))


def _say_state(opened, at_round: int, rounds: int) -> None:
    """One line on which swarm this is: new (and how it differs from the last one) or resumed."""
    if not opened.resumed:
        line = f"new swarm {opened.key}: state in {opened.dir}"
        if opened.changed:
            line += (f" (it differs from the last one in {', '.join(opened.changed)}; "
                     f"that one's state stays in {opened.previous})")
    elif at_round >= rounds:
        line = (f"swarm {opened.key} already reached round {at_round}: nothing to run "
                f"(a higher --rounds goes on); state in {opened.dir}")
    else:
        line = f"resuming swarm {opened.key} at round {at_round}: state in {opened.dir}"
    err.print(line, highlight=False, soft_wrap=True, markup=False)


def _is_loopback(maddr: str) -> bool:
    parts = maddr.split("/")
    return len(parts) > 2 and ((parts[1] == "ip4" and parts[2].startswith("127.")) or (parts[1] == "ip6" and parts[2] == "::1"))


def _print_bootstrap(maddrs: list[str]) -> None:
    """The join line, and whether another machine can use it: the non-loopback addresses are named."""
    boots = " ".join(f"--bootstrap {m}" for m in maddrs)
    err.print(f"[dim]another machine joins with: bitswarm swarm join {boots}[/]", highlight=False, soft_wrap=True)
    public = [m for m in maddrs if not _is_loopback(m)]
    if public:
        err.print(f"[dim]listening beyond this machine on {' '.join(public)}[/]", highlight=False, soft_wrap=True)
    else:
        err.print("[dim]listening on loopback only: for other machines pass --listen /ip4/0.0.0.0/tcp/PORT[/]",
                  highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGINT end the command as Ctrl-C does: a KeyboardInterrupt in the main thread, so
    every `finally` runs and the p2p daemons are shut down (a default SIGTERM would orphan them).
    SIGINT is set explicitly too: a process started in the background by a shell inherits SIGINT
    ignored, and Python then never installs its own handler (seen: a backgrounded `make test`)."""
    def stop(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _node_key(st):
    from bitswarm.node import identity

    return identity.peer_private_key(st.home)


@dataclass
class _ChainRounds:
    """A peer's rounds on chain: the ledger client, the coordinator that records the peer's
    rounds there, and (for a host) the schedule that maps swarm rounds to chain rounds."""
    ledger: Any
    coordinator: Any

    def schedule(self, at_round: int):
        from bitswarm.swarm.coordinator import ChainSchedule

        # The chain's current round is the swarm's `at_round` (0 for a new swarm; a resumed one
        # goes on from its peers' round). A chain behind a resumed swarm waits for it to catch up.
        s = ChainSchedule(self.ledger, max(1, self.ledger.swarm_round() - at_round), advance=True)
        self.coordinator.round_offset = s.first_round
        return s


def _chain_rounds(st, key) -> _ChainRounds:
    """This node's ledger client and a coordinator recording the rounds of the peer with `key`,
    checked first: every round locks stake and costs gas, so say now what is missing, not after
    the first round's training."""
    from bitswarm.cli.ledger_cmd import connect
    from bitswarm.ledger.errors import LedgerError
    from bitswarm.swarm.coordinator import ChainCoordinator
    from bitswarm.swarm.records import public_key_hex

    lg = connect(st, with_account=True)
    coordinator = ChainCoordinator({public_key_hex(key): lg})
    try:
        coordinator.check_ready()
    except LedgerError as exc:
        raise UserError(str(exc)) from None
    return _ChainRounds(lg, coordinator)


def _serve_model(store, key, model: str, listen: str):
    """A blob exchange serving the swarm's model to joiners (node's libp2p key, --listen's host)."""
    from bitswarm.node.exchange import BlobExchange
    from bitswarm.swarm.runner import any_port
    from bitswarm.swarm.transport import TransportError

    try:
        exchange = BlobExchange(store, identity=key, listen=[any_port(listen)]).start()
    except TransportError as exc:
        raise UserError(f"could not start serving the model to joiners: {exc}") from None
    exchange.announce(model)
    return exchange


def _fetch_model(store, key, manifest, listen: str, show: bool) -> None:
    """The swarm's model from the host's blob exchange, checked against its CID on arrival."""
    from bitswarm.node.exchange import BlobExchange, ExchangeError
    from bitswarm.swarm.runner import any_port
    from bitswarm.swarm.transport import TransportError

    if store.has(manifest.model):
        return
    how = (f"copy it by hand instead: `bitswarm store get {manifest.model} --out DIR` on the host, "
           f"`bitswarm store put DIR` here")
    if not manifest.model_sources:
        raise UserError(f"the swarm's model {manifest.model} is not in this store and the host serves it from "
                        f"nowhere; {how}")
    with stages(show) as stage:
        stage(f"fetching the swarm's model {manifest.model} from the host")
        try:
            # Bootstrapped from the host's exchange, so its daemon is connected before the stream opens.
            with BlobExchange(store, identity=key, listen=[any_port(listen)],
                              bootstrap=manifest.model_sources).start() as exchange:
                exchange.fetch(manifest.model, sources=manifest.model_sources)
        except (ExchangeError, TransportError) as exc:
            raise UserError(f"could not fetch the swarm's model {manifest.model} from "
                            f"{' '.join(manifest.model_sources)}: {exc}; {how}") from None


def _learning_rate(value: float | None) -> float | None:
    # The training spec refuses 0 (it would train nothing yet commit a round): say so before any work.
    if value is not None and not 0 < value <= 1:
        raise typer.BadParameter(f"{value:g} is not a learning rate: it must be above 0 and at most 1")
    return value


# Options shared by `run` and `join`, in one place so they cannot drift apart.
def _common():
    return dict(
        model=typer.Option(..., "--model", help="CID of the base policy every peer starts from."),
        rounds=typer.Option(3, "--rounds", min=1, help="Rounds to reach. A rerun with the same model, tasks and "
                            "settings resumes that swarm; any other starts a new one."),
        local=typer.Option(4, "--local", help="I: local rollout groups (tasks) per peer per round."),
        external=typer.Option(4, "--external", min=0, help="J: external groups taken from the swarm per round."),
        group_size=typer.Option(4, "--group-size", min=2, help="Completions per task (GRPO's group)."),
        max_new_tokens=typer.Option(24, "--max-new-tokens", min=1, help="Completion length limit."),
        temperature=typer.Option(1.0, "--temperature", min=0.0, help="Sampling temperature for rollouts."),
        lr=typer.Option(1e-3, "--lr", callback=_learning_rate, help="GRPO learning rate (above 0, at most 1)."),
        tasks=typer.Option("default", "--tasks", help="A preset (default: RL Swarm's nine; tiny: for tiny test models) or comma-separated task names."),
        backend=typer.Option("repro", "--backend", help="repro (bit-exact kernels, verifiable) or native (torch)."),
        task_seed=typer.Option(0, "--task-seed", min=0, help="Dataset seed the swarm shares."),
        as_json=typer.Option(False, "--json", help=JSON_HELP),
    )


_C = _common()


@app.command()
def run(
    ctx: typer.Context,
    model: str = _C["model"],
    peers: int = typer.Option(4, "--peers", min=1, max=1024, help="Peers to simulate on this machine."),
    rounds: int = _C["rounds"],
    local: int = _C["local"],
    external: int = _C["external"],
    transport: str = typer.Option("memory", "--transport", help="memory (in-process) or hivemind (real libp2p DHTs on loopback)."),
    tasks: str = _C["tasks"],
    group_size: int = _C["group_size"],
    max_new_tokens: int = _C["max_new_tokens"],
    temperature: float = _C["temperature"],
    lr: float = _C["lr"],
    backend: str = _C["backend"],
    task_seed: int = _C["task_seed"],
    workdir: Path = typer.Option(None, "--workdir", help="This swarm's peer state and training runs (default: "
                                 "<home>/swarm/run-<hash of the model, tasks and settings>, one folder per swarm). "
                                 "A folder holding another swarm is refused.", show_default=False),
    adversary: list[str] = typer.Option(
        [], "--adversary", help="PEER:NAME makes peer PEER (peer-0, peer-1, …) cheat: inflate (claims reward 1.0) or "
        "oversized (publishes one group padded to 64 completions). Repeatable.", show_default=False),
    listen: str = typer.Option("/ip4/127.0.0.1/tcp/0", "--listen", help="hivemind: the multiaddr the first peer "
                               "listens on, which joiners bootstrap from (loopback by default; e.g. "
                               "/ip4/0.0.0.0/tcp/31337 to be joined from other machines)."),
    round_seconds: float = typer.Option(60.0, "--round-seconds", min=0.1, help="hivemind: a round's slot. Round r "
                                        "starts r slots after round 0, so a joiner reads the current round from "
                                        "its clock; a swarm that falls behind skips to the current slot."),
    ledger: bool = typer.Option(False, "--ledger", help="hivemind: count rounds on the chain's SwarmCoordinator "
                                "(a round lasts until it is closed on chain, which anyone may do after the "
                                "contract's round duration; this node does) instead of --round-seconds, name the "
                                "chain in the manifest so joiners follow it, and record the first peer's rounds "
                                "there (needs ETH for gas and `bitswarm node register --roles swarm --stake N`)."),
    as_json: bool = _C["as_json"],
):
    """Run a swarm of --peers peers on this machine for --rounds SAPO rounds.

    Over hivemind the first peer runs as this node (its identity's peer key; the others' keys
    derive from it), serves the model, and publishes the swarm's manifest (model, tasks,
    settings, round schedule), so `bitswarm swarm join --bootstrap MADDR` needs nothing else."""
    from bitswarm.swarm import state as swarm_state
    from bitswarm.swarm.adversary import AdversaryError, parse_assignments
    from bitswarm.swarm.runner import node_peer_keys, peer_names, run_swarm
    from bitswarm.swarm.transport import TransportError

    with reporting(as_json):
        if transport not in TRANSPORTS:
            raise UserError(f"--transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        st = state(ctx)
        settings = _settings(local, external, group_size, max_new_tokens, temperature, lr, backend, task_seed)
        mix = _mix(tasks)
        try:
            adversaries = parse_assignments(adversary, peer_names(peers))
        except AdversaryError as exc:
            raise UserError(str(exc)) from None
        store = st.store()
        _require_model(store, model)
        if ledger and transport != "hivemind":
            raise UserError("--ledger counts a joinable swarm's rounds on chain: it needs --transport hivemind")
        extra = {}
        host = exchange = None
        if transport == "hivemind":
            from bitswarm.swarm.records import public_key_hex

            host = _node_key(st)
            extra["node"] = public_key_hex(host)  # its peers' keys derive from it
        defn = swarm_state.definition("run", model, mix, settings, peers=peers, transport=transport,
                                      adversaries={name: adv.name for name, adv in adversaries.items()}, **extra)
        opened = _open_state(st, "run", defn, workdir)
        started_at = []
        announce = []
        chain = _chain_rounds(st, host) if ledger else None
        chain_ref = []

        def on_start(swarm) -> None:
            started_at.append(swarm.round)
            _say_state(opened, swarm.round, rounds)
            if host is not None:
                from bitswarm.swarm import manifest

                ref = None
                if chain is not None:
                    dep = chain.ledger.deployment
                    ref = manifest.ChainRef(chain_id=dep.chain_id, coordinator=dep.contracts["SwarmCoordinator"],
                                            first_round=swarm.schedule.first_round)
                    chain_ref.append(ref)
                    err.print(f"rounds on chain {ref.chain_id} (SwarmCoordinator {ref.coordinator}): swarm round r is "
                              f"chain round {ref.first_round} + r; a round ends when it is closed on chain, which "
                              f"anyone may do after {swarm.schedule.round_seconds:g} s (this node does)", highlight=False)
                man = manifest.build(host, model, mix, settings, swarm.schedule, exchange.maddrs[:8], chain=ref)
                announce.append(manifest.encode_signed(man, host))
                publish(swarm)
                _print_bootstrap(next(iter(swarm.peers.values())).transport.visible_maddrs())

        def publish(swarm) -> None:  # each round: the DHT forgets it after expiration_s
            if announce and not next(iter(swarm.peers.values())).transport.publish_manifest(announce[0]):
                err.print("[yellow]no DHT node took the swarm's manifest; joiners cannot find it yet[/]")

        try:
            with _signals_interrupt():
                if host is not None:
                    exchange = _serve_model(store, host, model, listen)
                try:
                    summary = run_swarm(
                        store, model, opened.dir, peers, rounds, mix, settings, transport, on_report=_print_round,
                        on_start=on_start, adversaries=adversaries,
                        keys=node_peer_keys(host, "peer-0") if host is not None else None, listen=listen,
                        round_seconds=round_seconds if host is not None else None, before_round=publish,
                        schedule=chain.schedule if chain is not None else None,
                        coordinator=chain.coordinator if chain is not None else None)
                finally:
                    if exchange is not None:
                        exchange.close()
        except TransportError as exc:
            raise UserError(str(exc)) from None
        summary["state"] = opened.as_json(started_at[0])
        if chain_ref:
            summary["chain"] = chain_ref[0].model_dump() | {
                "submitted": sum(p["submitted"] for p in summary["peers"]), "late": list(chain.coordinator.late),
                "errors": list(chain.coordinator.errors), "chain_round": chain.ledger.swarm_round()}
        if as_json:
            emit_json(summary)
            return
        for p in summary["peers"]:
            out.print(f"{p['name']:<10} rewards {' '.join(f'{r:.3f}' for r in p['rewards'])}  "
                      f"updates {p['updates']}  external groups used {p['external_groups_used']}", highlight=False)
        out.print(f"rollouts shared {summary['rollouts_shared']}, used as external {summary['rollouts_used_external']}, "
                  f"dropped {summary['dropped'] or 'none'}", highlight=False)
        if summary["adversaries"] or summary["claims_refuted"]:
            out.print(f"adversaries {summary['adversaries'] or 'none'}; claims refused as false "
                      f"{summary['claims_refuted'] or 'none'}", highlight=False)


# `join` takes the swarm's model, tasks and settings from its manifest: its options default to
# "not given", so a value the user did give can be checked against the swarm's.
def _unset(help_: str, flag: str, **kw):
    return typer.Option(None, flag, help=help_ + " Default: the swarm's.", show_default=False, **kw)


def _host_ids(bootstrap: list[str]) -> list[str]:
    """The peer ids in the bootstrap multiaddrs (`…/p2p/<id>`), in order, each once."""
    ids = [m.rstrip("/").rsplit("/p2p/", 1)[1] for m in bootstrap if "/p2p/" in m]
    return list(dict.fromkeys(ids))


# How long a joiner asks the DHT for the host's manifest before it concludes there is none.
MANIFEST_WAIT_S = 5.0


def _read_manifest(transport, bootstrap: list[str]):
    """The first bootstrap peer's manifest that verifies against its peer id, or None.

    A DHT read just after joining may miss a value that is there, so each peer is asked again
    for a few seconds. A manifest that fails its checks is refused outright: it names the
    host's key, so only the host (or a broken DHT node) can have put it there."""
    import base58

    from bitswarm.swarm import manifest as swarm_manifest
    from bitswarm.swarm.p2p_diagnosis import public_key_of_peer_id

    ids = _host_ids(bootstrap)
    deadline = time.monotonic() + MANIFEST_WAIT_S
    while ids:
        for pid in ids:
            blob = transport.manifest(pid)
            if blob is None:
                continue
            key = public_key_of_peer_id(base58.b58decode(pid))
            try:
                return pid, swarm_manifest.decode_verified(blob, host=key.hex() if key else None)
            except swarm_manifest.ManifestError as exc:
                raise UserError(f"the swarm manifest of {pid} is not valid ({exc}); ask its host to restart, "
                                "or bootstrap from another host") from None
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return None, None


def _follow_chain(st, ref):
    """A read-only client of this node's chain, to read a swarm's rounds from its SwarmCoordinator."""
    from bitswarm.cli.ledger_cmd import connect
    from bitswarm.ledger.errors import LedgerError

    try:
        return connect(st, with_account=False)
    except (LedgerError, UserError) as exc:
        raise UserError(f"this swarm counts its rounds on chain {ref.chain_id} (SwarmCoordinator {ref.coordinator}), "
                        f"and this node cannot read a chain: {str(exc).rstrip('.')}. Point it at the swarm's chain; "
                        "no account is needed to follow its rounds (only to record yours, with --ledger)") from None


def _same_chain(lg, ref) -> None:
    ours = lg.deployment.contracts["SwarmCoordinator"]
    if lg.deployment.chain_id != ref.chain_id or ours.lower() != ref.coordinator.lower():
        raise UserError(f"this swarm counts its rounds on chain {ref.chain_id} at SwarmCoordinator {ref.coordinator}, "
                        f"but this node's chain is {lg.deployment.chain_id} with SwarmCoordinator {ours}: point it at "
                        "the swarm's chain (BITSWARM_RPC or `bitswarm config set rpc_url URL`), or join another swarm")


@app.command()
def join(
    ctx: typer.Context,
    bootstrap: list[str] = typer.Option(..., "--bootstrap", help="Multiaddr of the swarm's host, as `bitswarm swarm run` prints it, e.g. /ip4/1.2.3.4/tcp/31337/p2p/12D3KooW… (repeatable). The model, tasks, settings and round come from the host's manifest."),
    model: str = _unset("CID of the base policy; if given, it must be the swarm's (the model is fetched from the host).", "--model"),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Rounds to run, from the swarm's current round (or from --start-round). A rerun of the same swarm resumes this peer's state."),
    start_round: int = typer.Option(None, "--start-round", min=0, help="Start at this round instead of the swarm's current one (needed only with a host that publishes no manifest).", show_default=False),
    local: int = _unset("I: local rollout groups per round.", "--local"),
    external: int = _unset("J: external groups taken from the swarm per round (this peer's own choice).", "--external", min=0),
    tasks: str = _unset("A preset or comma-separated task names; if given, they must be the swarm's.", "--tasks"),
    group_size: int = _unset("Completions per task.", "--group-size", min=2),
    max_new_tokens: int = _unset("Completion length limit.", "--max-new-tokens", min=1),
    temperature: float = _unset("Sampling temperature.", "--temperature", min=0.0),
    lr: float = _unset("GRPO learning rate (this peer's own choice).", "--lr", callback=_learning_rate),
    backend: str = _unset("repro or native.", "--backend"),
    task_seed: int = _unset("Dataset seed the swarm shares.", "--task-seed", min=0),
    listen: str = typer.Option("/ip4/0.0.0.0/tcp/0", "--listen", help="Multiaddr this peer listens on."),
    ledger: bool = typer.Option(False, "--ledger", help="Record each round on the chain's SwarmCoordinator (needs ETH for gas and `bitswarm node register --roles swarm --stake N`: each round locks the contract's swarm stake until its refutation window closes). A refused submission stops the command with the chain's reason."),
    as_json: bool = _C["as_json"],
):
    """Join a swarm over libp2p as this node (its identity's peer key) and train with it.

    Only --bootstrap is needed: the host's signed manifest gives the model (fetched from the
    host), tasks, settings and round schedule. Options given as well must agree with it."""
    from bitswarm.swarm import state as swarm_state
    from bitswarm.swarm.coordinator import ChainSchedule, SubmissionError
    from bitswarm.swarm.hivemind_transport import HivemindTransport
    from bitswarm.swarm.manifest import PEER_OWN, mismatches
    from bitswarm.swarm.peer import PeerSettings, SwarmPeer
    from bitswarm.swarm.records import public_key_hex
    from bitswarm.swarm.transport import TransportError

    asked = {"local": local, "external": external, "group_size": group_size, "max_new_tokens": max_new_tokens,
             "temperature": temperature, "lr": lr, "backend": backend, "task_seed": task_seed}
    given = {k: v for k, v in asked.items() if v is not None}
    with reporting(as_json), _signals_interrupt():
        st = state(ctx)
        mix = _mix(tasks) if tasks is not None else None
        defaults = {name: _C[name].default for name in asked}  # `swarm run`'s, for a swarm without a manifest
        settings = _settings(**{**defaults, **given})  # checks the given values, in words
        store = st.store()
        key = _node_key(st)
        coordinator = lg = None
        if ledger:
            recording = _chain_rounds(st, key)
            lg, coordinator = recording.ledger, recording.coordinator
        with stages(not as_json) as stage:
            stage("starting the p2p daemon and reaching the bootstrap peers")
            try:
                transport = HivemindTransport(key, initial_peers=bootstrap, host_maddrs=[listen])
            except TransportError as exc:
                raise UserError(str(exc)) from None
        reports = []
        try:
            host, man = _read_manifest(transport, bootstrap)
            schedule = None
            if man is not None:
                differ = mismatches(man, model, mix, given)
                if differ:
                    raise UserError(f"this swarm (host {host}) does not match what you asked for: {'; '.join(differ)}. "
                                    "Leave those options out to take the swarm's, or join another swarm")
                model, mix = man.model, man.task_mix()
                settings = PeerSettings(**{**man.settings.model_dump(), **{k: given[k] for k in PEER_OWN if k in given}})
                schedule = man.schedule
                if man.chain is not None:  # rounds are the chain's: follow them there (an account only for --ledger)
                    lg = lg or _follow_chain(st, man.chain)
                    _same_chain(lg, man.chain)
                    schedule = ChainSchedule(lg, man.chain.first_round, advance=ledger)
                _fetch_model(store, key, man, listen, not as_json)
            elif model is None:
                raise UserError(f"no swarm manifest from {' or '.join(_host_ids(bootstrap)) or 'the bootstrap peers'}: "
                                "bootstrap from the host that printed the join line (`bitswarm swarm run --transport "
                                "hivemind`), or give --model, --tasks and --start-round to join without one")
            else:
                err.print("[yellow]the bootstrap peers publish no swarm manifest: using your --model, --tasks and "
                          "settings, and rounds from --start-round[/]", highlight=False)
                mix = mix or _mix("default")
                _require_model(store, model)
            # The peer's own key is part of the swarm: a new identity in this home is a new peer.
            defn = swarm_state.definition("join", model, mix, settings, peer=public_key_hex(key))
            opened = _open_state(st, "join", defn, None)
            err.print(f"[dim]joined as {transport.peer_id}; others can bootstrap from "
                      f"{' '.join(transport.visible_maddrs())}[/]")
            peer = SwarmPeer(transport.peer_id[-8:], store, opened.dir, model, transport, mix, key, settings, coordinator)
            if start_round is not None or schedule is None:  # rounds by number: reach start + rounds, unpaced
                schedule = None
                peer.next_round = max(peer.next_round, start_round or 0)
                end = (start_round or 0) + rounds
            else:  # the swarm's schedule: --rounds rounds from its current round on, each in its slot
                peer.next_round = max(peer.next_round, schedule.current())
                end = peer.next_round + rounds
            from_round = peer.next_round
            if coordinator is not None and isinstance(schedule, ChainSchedule):
                coordinator.round_offset = schedule.first_round  # the swarm's own map from rounds to chain rounds
            elif coordinator is not None:
                # The round this peer runs now is the chain's current round (a resumed peer may be
                # past --start-round: mapping from --start-round would aim every claim at a future round).
                coordinator.round_offset = lg.swarm_round() - peer.next_round
            _say_state(opened, from_round, end)
            while (peer.next_round < end) if schedule is None else (len(reports) < rounds):
                if schedule is not None:  # each round in its slot; a peer that fell behind skips to the current one
                    peer.next_round = max(peer.next_round, schedule.current())
                    schedule.wait_for(peer.next_round)
                report = peer.run_round()
                _print_round(report)
                reports.append(report)
                if coordinator is not None and coordinator.refused:
                    raise SubmissionError(*coordinator.refused[-1])
        except TransportError as exc:
            raise UserError(str(exc)) from None
        finally:
            transport.close()
        result = {
            "peer_id": transport.peer_id, "rounds": [r["round"] for r in reports],
            "rewards": [r["reward"] for r in reports], "model": peer.model,
            "swarm": {"host": host, "base_model": model, "tasks": list(mix.names),
                      "round_seconds": man.round_seconds if man is not None else None,
                      "chain": man.chain.model_dump() if man is not None and man.chain is not None else None},
            "rollouts_shared": sum(r["rollouts_shared"] for r in reports),
            "external_groups_used": sum(r["external_groups"] for r in reports),
            "external_groups_seen": sum(r["external_available"] for r in reports),  # informative or not
            "dropped": dict(peer.filter.dropped),
            "submitted": sum(1 for r in reports if r.get("submitted")),
            # Trained after the chain's round had moved on (no barrier): not submitted, not an error.
            "late_for_chain": list(coordinator.late) if coordinator is not None else [],
            "state": opened.as_json(from_round),
        }
        if as_json:
            emit_json(result)
        else:
            chain = ""
            if coordinator is not None:
                chain = f"; {result['submitted']} submitted on chain"
                if result["late_for_chain"]:
                    chain += f", rounds {result['late_for_chain']} too late for the chain's round"
            out.print(f"{len(reports)} rounds, rewards {' '.join(f'{r:.3f}' for r in result['rewards'])}; "
                      f"policy {peer.model}{chain}", highlight=False)


@app.command("warm-start")
def warm_start_cmd(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="CID of the base model."),
    tasks: str = typer.Option("default", "--tasks", help="Task preset or comma-separated task names."),
    steps: int = typer.Option(100, "--steps", min=1, help="Supervised steps."),
    lr: float = typer.Option(1e-2, "--lr", callback=_learning_rate, help="Learning rate (above 0, at most 1)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Which task instances to learn from."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Teach a base model the tasks' answer format with a few supervised steps (so RL has signal)."""
    import tempfile

    from bitswarm.swarm.warmstart import warm_start

    with reporting(as_json):
        st = state(ctx)
        store = st.store()
        _require_model(store, model)
        mix = _mix(tasks)
        with stages(not as_json) as stage, tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
            stage(f"{steps} supervised steps")
            cid = warm_start(store, model, mix, Path(tmp) / "run", steps=steps, lr=lr, seed=seed)
        if as_json:
            emit_json({"cid": cid, "base": model, "steps": steps})
        else:
            out.print(cid)
