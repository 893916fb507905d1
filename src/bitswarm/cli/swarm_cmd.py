"""`bitswarm swarm`: collective RL post-training (SAPO) on this machine, or joined over libp2p."""

from __future__ import annotations

from pathlib import Path

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
    err.print(f"round {report['round']:>3}  {report['peer']:<10} reward {report['reward']:.3f}  "
              f"{used if report['updated'] else 'no informative group: no update'}  {report['seconds']:.1f}s",
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


def _print_bootstrap(swarm) -> None:
    if swarm.transport == "hivemind":
        first = next(iter(swarm.peers.values()))
        maddrs = " ".join(f"--bootstrap {m}" for m in first.transport.visible_maddrs())
        err.print(f"[dim]another machine joins with: bitswarm swarm join {maddrs} --model {swarm.model}[/]",
                  highlight=False, soft_wrap=True)


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
        lr=typer.Option(1e-3, "--lr", min=0.0, help="GRPO learning rate."),
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
    as_json: bool = _C["as_json"],
):
    """Run a swarm of --peers peers on this machine for --rounds SAPO rounds."""
    from bitswarm.swarm import state as swarm_state
    from bitswarm.swarm.adversary import AdversaryError, parse_assignments
    from bitswarm.swarm.runner import peer_names, run_swarm
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
        defn = swarm_state.definition("run", model, mix, settings, peers=peers, transport=transport,
                                      adversaries={name: adv.name for name, adv in adversaries.items()})
        opened = _open_state(st, "run", defn, workdir)
        started_at = []

        def on_start(swarm) -> None:
            started_at.append(swarm.round)
            _say_state(opened, swarm.round, rounds)
            _print_bootstrap(swarm)

        try:
            summary = run_swarm(store, model, opened.dir, peers, rounds, mix, settings, transport,
                                on_report=_print_round, on_start=on_start, adversaries=adversaries)
        except TransportError as exc:
            raise UserError(str(exc)) from None
        summary["state"] = opened.as_json(started_at[0])
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


@app.command()
def join(
    ctx: typer.Context,
    bootstrap: list[str] = typer.Option(..., "--bootstrap", help="Multiaddr of a peer already in the swarm, e.g. /ip4/1.2.3.4/tcp/31337/p2p/12D3KooW… (repeatable)."),
    model: str = _C["model"],
    rounds: int = _C["rounds"],
    start_round: int = typer.Option(0, "--start-round", min=0, help="The swarm's current round (rounds are keys on the DHT)."),
    local: int = _C["local"],
    external: int = _C["external"],
    tasks: str = _C["tasks"],
    group_size: int = _C["group_size"],
    max_new_tokens: int = _C["max_new_tokens"],
    temperature: float = _C["temperature"],
    lr: float = _C["lr"],
    backend: str = _C["backend"],
    task_seed: int = _C["task_seed"],
    listen: str = typer.Option("/ip4/0.0.0.0/tcp/0", "--listen", help="Multiaddr this peer listens on."),
    ledger: bool = typer.Option(False, "--ledger", help="Record each round on the chain's SwarmCoordinator (needs ETH for gas and `bitswarm node register --roles swarm --stake N`: each round locks the contract's swarm stake until its refutation window closes). A refused submission stops the command with the chain's reason."),
    as_json: bool = _C["as_json"],
):
    """Join an existing swarm over libp2p as this node (its identity's peer key) and train with it."""
    from bitswarm import peer_key
    from bitswarm.node import identity
    from bitswarm.swarm import state as swarm_state
    from bitswarm.swarm.coordinator import SubmissionError
    from bitswarm.swarm.hivemind_transport import HivemindTransport
    from bitswarm.swarm.peer import SwarmPeer
    from bitswarm.swarm.records import public_key_hex
    from bitswarm.swarm.transport import TransportError

    with reporting(as_json):
        st = state(ctx)
        settings = _settings(local, external, group_size, max_new_tokens, temperature, lr, backend, task_seed)
        mix = _mix(tasks)
        store = st.store()
        _require_model(store, model)
        ident = identity.load(st.home)
        key = peer_key.decode_private(ident.peer_file.read_bytes())
        coordinator = lg = None
        if ledger:
            from bitswarm.cli.ledger_cmd import connect
            from bitswarm.ledger.errors import LedgerError
            from bitswarm.swarm.coordinator import ChainCoordinator

            lg = connect(st, with_account=True)
            coordinator = ChainCoordinator({public_key_hex(key): lg})
            try:  # every round locks stake and costs gas: say so now, not after the first round's training
                coordinator.check_ready()
            except LedgerError as exc:
                raise UserError(str(exc)) from None
        # The peer's own key is part of the swarm: a new identity in this home is a new peer.
        defn = swarm_state.definition("join", model, mix, settings, peer=public_key_hex(key))
        opened = _open_state(st, "join", defn, None)
        with stages(not as_json) as stage:
            stage("starting the p2p daemon and reaching the bootstrap peers")
            try:
                transport = HivemindTransport(key, initial_peers=bootstrap, host_maddrs=[listen])
            except TransportError as exc:
                raise UserError(str(exc)) from None
        reports = []
        try:
            err.print(f"[dim]joined as {transport.peer_id}; others can bootstrap from "
                      f"{' '.join(transport.visible_maddrs())}[/]")
            peer = SwarmPeer(ident.peer_id[-8:], store, opened.dir, model, transport, mix, key, settings,
                             coordinator)
            peer.next_round = max(peer.next_round, start_round)
            from_round = peer.next_round
            if coordinator is not None:
                # The round this peer runs now is the chain's current round (a resumed peer may be
                # past --start-round: mapping from --start-round would aim every claim at a future round).
                coordinator.round_offset = lg.swarm_round() - peer.next_round
            _say_state(opened, from_round, start_round + rounds)
            while peer.next_round < start_round + rounds:
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
            "rollouts_shared": sum(r["rollouts_shared"] for r in reports),
            "external_groups_used": sum(r["external_groups"] for r in reports),
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
    lr: float = typer.Option(1e-2, "--lr", min=0.0, help="Learning rate."),
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
