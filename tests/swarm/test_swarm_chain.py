"""Swarm rounds recorded on the SwarmCoordinator contract of a real (devnet) chain: staked
claims, and an inflated claim refuted, voted down and slashed."""

from __future__ import annotations

import time

import pytest

from bitswarm.ledger.client import CREDIT, ROLE_REFEREE, ROLE_SWARM, ROLE_VERIFIER
from bitswarm.ledger.errors import LedgerError, RevertError
from bitswarm.swarm.adversary import SwarmAdversary
from bitswarm.swarm.audit import Auditor
from bitswarm.swarm.coordinator import ChainCoordinator
from bitswarm.swarm.runner import LocalSwarm

from ..ledger.chains import start_devnet
from .conftest import FAST
from .support import JOIN, cli_json, invoke, memory_join, model_in_home  # noqa: F401 (fixture)

pytestmark = pytest.mark.network
STAKE = 100 * CREDIT


@pytest.fixture
def chain(tmp_path):
    c = start_devnet(tmp_path / "devnet")
    yield c
    c.stop()


def _join(chain, swarm: LocalSwarm, names: list[str], stake: int = STAKE, first: int = 1) -> dict:
    """Add the peers, each with its own registered (and staked) chain account; wire a ChainCoordinator."""
    ledgers = {}
    for i, name in enumerate(names, start=first):
        peer = swarm.add_peer(name)
        lg = chain.ledger(i)
        lg.register(f"12D3KooWswarm{name}", ROLE_SWARM)
        if stake:
            lg.stake(stake)
        ledgers[peer.public_key] = lg
    coord = ChainCoordinator(ledgers, round_offset=chain.ledger(0).swarm_round() - swarm.round)
    swarm.coordinator = coord
    for p in swarm.peers.values():
        p.coordinator = coord
    return ledgers


def test_each_peer_submits_its_round_to_the_chain(warm_tiny, tiny_mix, tmp_path, chain):
    store, model = warm_tiny
    owner = chain.ledger(0)
    swarm = LocalSwarm(store, model, tmp_path / "swarm", tiny_mix, FAST)
    ledgers = _join(chain, swarm, ["a", "b"])
    coord = swarm.coordinator
    for _ in range(2):
        reports = swarm.run_round()
        owner.swarm_advance_round()
    submitted = [r for p in swarm.peers.values() for r in p.history if r.get("submitted")]
    assert submitted, f"no peer submitted: {coord.errors}"
    for r in submitted:
        peer = next(p for p in swarm.peers.values() if r in p.history)
        lg = ledgers[peer.public_key]
        sub = lg.swarm_submission(r["round"] + coord.round_offset)
        assert "sha256:" + sub["rollout_cid"].hex() == r["rollout_cid"]
        assert sub["step_root"].hex() == r["step_root"].removeprefix("sha256:")
        assert sub["reward"] == round(r["reward"] * 1_000_000) and sub["status"] == "open"
        assert lg.node()["locked"] >= lg.swarm_stake()
    assert owner.call("SwarmCoordinator", "participation", ledgers[swarm.peers["a"].public_key].address) >= 1
    with pytest.raises(RevertError, match="already submitted|round"):
        lg.swarm_submit(r["round"] + coord.round_offset, r["rollout_cid"], 0.0, r["step_root"])
    assert reports

    # A window that has closed is released by the peer's next submission, so its stake comes back.
    owner.increase_time(owner.call("SwarmCoordinator", "round_duration"))
    third = {r["peer"]: r for r in swarm.run_round()}
    again = [p for p in swarm.peers.values() if third[p.name].get("submitted")]
    assert again, f"no peer submitted in the third round: {coord.errors}"
    for p in again:
        lg = ledgers[p.public_key]
        earlier = [r["round"] + coord.round_offset for r in p.history[:-1] if r.get("submitted")]
        assert [lg.swarm_submission(cr)["status"] for cr in earlier] == ["released"] * len(earlier)
        assert lg.node()["locked"] == lg.swarm_stake()  # only the newest claim still holds stake


def test_an_identity_without_stake_is_told_so_in_words(warm_tiny, tiny_mix, tmp_path, chain):
    store, model = warm_tiny
    swarm = LocalSwarm(store, model, tmp_path / "swarm", tiny_mix, FAST)
    (lg,) = _join(chain, swarm, ["broke"], stake=0).values()
    need = lg.swarm_stake() // CREDIT
    with pytest.raises(LedgerError) as exc:
        swarm.coordinator.check_ready()
    msg = str(exc.value)
    assert f"{lg.address} has 0 credits of free stake" in msg
    assert f"locks {need} credits" in msg and f"bitswarm node register --roles swarm --stake {need}" in msg
    for _ in range(4):  # training goes on; the refused submission is reported, not raised
        if swarm.run_round()[0]["updated"]:
            break
    assert swarm.peers["broke"].history[-1]["submitted"] is False
    assert any("0 credits of free stake" in e for e in swarm.coordinator.errors)
    outsider = chain.ledger(5)
    with pytest.raises(LedgerError, match="is not registered as a swarm node"):
        outsider.swarm_check_stake()


def test_an_inflated_claim_is_refuted_voted_down_and_slashed(warm_tiny, tiny_mix, tmp_path, chain):
    store, model = warm_tiny
    swarm = LocalSwarm(store, model, tmp_path / "swarm", tiny_mix, FAST, adversaries={"liar": SwarmAdversary("inflate")})
    ledgers = _join(chain, swarm, ["honest", "liar"])
    liar = ledgers[swarm.peers["liar"].public_key]
    auditor = chain.ledger(3)
    auditor.register("12D3KooWauditor", ROLE_VERIFIER)
    auditor.stake(STAKE)
    referees = [chain.ledger(i) for i in (4, 5)]
    for i, lg in enumerate(referees):
        lg.register(f"12D3KooWreferee{i}", ROLE_REFEREE)
        lg.stake(STAKE)
    owner = chain.ledger(0)

    lied = None
    for _ in range(4):  # until the liar has trained (and so submitted) on rollouts that are not all right
        reports = {r["peer"]: r for r in swarm.run_round()}
        owner.swarm_advance_round()
        r = reports["liar"]
        if r.get("submitted") and r["reward"] < 1.0:
            lied = r["round"] + swarm.coordinator.round_offset
            break
    assert lied is not None, f"the liar never submitted: {swarm.coordinator.errors}"
    assert liar.swarm_submission(lied)["reward"] == 1_000_000  # it claimed 1.0

    refuted = Auditor(auditor, store, tiny_mix).refute_false_claims()
    assert refuted == [(lied, liar.address)]  # the honest claims hold and are left alone
    for lg in referees:
        assert Auditor(lg, store, tiny_mix).vote_on_refutations() == [(lied, liar.address, True)]
    before = auditor.token_balance()
    auditor.increase_time(auditor.call("SwarmCoordinator", "vote_timeout"))
    auditor.swarm_settle_refutation(lied, liar.address)

    stake = liar.swarm_stake()
    assert liar.swarm_submission(lied)["status"] == "refuted"
    assert liar.node()["staked"] == STAKE - stake
    assert auditor.token_balance() == before + stake and auditor.node()["locked"] == 0
    for lg in referees:
        lg.swarm_release_vote(lied, liar.address)
        assert lg.node()["locked"] == 0 and lg.node()["staked"] == STAKE
    assert owner.call("SwarmCoordinator", "wins", liar.address) == 0


# -- `swarm join --ledger` as a person runs it (over memory: the p2p daemon is not what is tested) --

@pytest.fixture
def on_chain(chain, monkeypatch, memory_join) -> str:
    """This home's identity, pointed at the chain; returns the tiny model's CID in its store."""
    monkeypatch.setenv("BITSWARM_RPC", chain.url)
    monkeypatch.setenv("BITSWARM_PASSPHRASE", "join test phrase")
    assert invoke(["identity", "new", "--json"]).exit_code == 0
    return model_in_home()


def test_join_ledger_from_an_unregistered_unfunded_identity_is_an_error(on_chain):
    err = cli_json([*JOIN, "--model", on_chain, "--ledger", "--json"], ok=False)["error"]
    assert "has no ETH to pay gas" in err and "`bitswarm ledger fund`" in err
    assert "is not registered as a swarm node" in err and "bitswarm node register --roles swarm" in err


def test_join_ledger_stops_at_a_refused_submission_with_the_reason(on_chain, chain):
    assert invoke(["ledger", "fund", "--credits", "100", "--json"]).exit_code == 0
    need = chain.ledger(0).swarm_stake() // CREDIT
    assert invoke(["node", "register", "--roles", "swarm", "--stake", str(3 * need), "--json"]).exit_code == 0
    first = cli_json([*JOIN, "--model", on_chain, "--ledger", "--json"])
    assert first["submitted"] == 1 and first["rounds"] == [0]
    # The chain is still in the same round: the resumed peer's next claim is refused as a repeat,
    # which once read as `"submitted": 0` with exit 0.
    res = invoke([*JOIN, "--model", on_chain, "--ledger", "--rounds", "2"])
    assert res.exit_code == 1, res.output
    assert "round 1 was trained, but the chain refused its claim" in res.stderr
    assert "already submitted for this round" in res.stderr


# -- rounds counted on chain: `swarm run --ledger` and a joiner that follows them ---------------

def test_a_chain_schedule_follows_the_contracts_round_and_closes_a_due_one(chain):
    from bitswarm.swarm.coordinator import ChainSchedule

    owner = chain.ledger(0)
    first = owner.swarm_round()
    watcher = ChainSchedule(chain.ledger(1), first)  # reads only
    closer = ChainSchedule(owner, first, advance=True, poll_s=0.05)
    assert watcher.current() == 0 and watcher.round_seconds == owner.call("SwarmCoordinator", "round_duration")
    owner.swarm_advance_round()  # the owner may cut a round short
    assert watcher.current() == closer.current() == 1
    watcher.wait_for(1)  # reached already: returns at once
    # Once a round's duration has passed on chain, a waiting peer with `advance` closes it itself.
    owner.increase_time(int(closer.round_seconds))
    closer.wait_for(2)
    assert watcher.current() == 2 and owner.swarm_round() == first + 2
    with pytest.raises(ValueError, match="chain round, 1 or more"):
        ChainSchedule(owner, 0)


def test_a_joiner_on_another_chain_is_refused_naming_both(chain):
    from bitswarm.cli.output import UserError
    from bitswarm.cli.swarm_cmd import _same_chain
    from bitswarm.swarm.manifest import ChainRef

    lg = chain.ledger(0)
    ours = lg.deployment.contracts["SwarmCoordinator"]
    _same_chain(lg, ChainRef(chain_id=lg.deployment.chain_id, coordinator=ours.lower(), first_round=1))
    with pytest.raises(UserError, match=f"chain {lg.deployment.chain_id + 1} at SwarmCoordinator") as e:
        _same_chain(lg, ChainRef(chain_id=lg.deployment.chain_id + 1, coordinator=ours, first_round=1))
    assert f"this node's chain is {lg.deployment.chain_id} with SwarmCoordinator {ours}" in str(e.value)


@pytest.mark.slow  # two bitswarm processes, their p2p daemons and a devnet: about a minute
def test_swarm_run_ledger_counts_rounds_on_chain_and_a_joiner_follows_them(chain, warm_tiny, tmp_path):
    """The host's rounds are the chain's: it waits for the chain to move on (here the owner cuts
    rounds short), records its first peer's rounds there, and names the chain in its manifest, so
    a joiner takes the round from the contract, not from a clock: after one cut, round 1, long
    before the 60 s round duration would have said so."""
    import json
    import signal
    import subprocess
    import sys
    import uuid

    from bitswarm.store import BlobStore

    from .support import live_p2pd
    from .test_swarm_cli import Host, _home

    marker = uuid.uuid4().hex
    src, model = warm_tiny
    host_env = _home(tmp_path / "host", marker) | {"BITSWARM_RPC": chain.url}
    join_env = _home(tmp_path / "joiner", marker) | {"BITSWARM_RPC": chain.url}
    src.get(model, tmp_path / "model")
    BlobStore(tmp_path / "host" / "store").put(tmp_path / "model")
    need = chain.ledger(0).swarm_stake() // CREDIT
    for args in (["ledger", "fund", "--credits", "100"], ["node", "register", "--roles", "swarm", "--stake", str(2 * need)]):
        done = subprocess.run([sys.executable, "-m", "bitswarm", *args, "--json"], env=host_env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    owner = chain.ledger(0)
    first = owner.swarm_round()
    host = Host(host_env, "--peers", "1", "--rounds", "1000", "--model", model, "--local", "2", "--external", "1",
                "--group-size", "8", "--max-new-tokens", "12", "--lr", "1e-6", "--tasks", "tiny", "--ledger")
    try:
        boot = [arg for m in host.bootstrap() for arg in ("--bootstrap", m)]
        assert f"swarm round r is chain round {first} + r" in host.wait_for("rounds on chain")
        host.wait_for("round   0")
        owner.swarm_advance_round()
        host.wait_for("round   1")

        def join(env: dict, *args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "bitswarm", "swarm", "join", *boot, "--listen",
                                   "/ip4/127.0.0.1/tcp/0", *args, "--json"],
                                  env=env, capture_output=True, text=True, timeout=300, check=False)

        blind = join(join_env | {"BITSWARM_RPC": "http://127.0.0.1:9"}, "--rounds", "1")
        assert blind.returncode == 1
        assert f"this swarm counts its rounds on chain {owner.deployment.chain_id}" in json.loads(blind.stdout)["error"]

        joined = join(join_env, "--rounds", "1")  # no account needed to follow the chain's rounds
        assert joined.returncode == 0, joined.stderr
        r = json.loads(joined.stdout)
        assert r["rounds"] == [1] and r["swarm"]["chain"]["first_round"] == first
        assert r["swarm"]["chain"]["coordinator"] == owner.deployment.contracts["SwarmCoordinator"]
    finally:
        code = host.stop(signal.SIGTERM)
        out = host.proc.stdout.read()
        deadline = time.monotonic() + 10
        while live_p2pd(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert code == 130, "".join(host.lines)
    assert not live_p2pd(marker)
    # Each round the host's first peer trained is recorded in chain round first + r, by the host's identity.
    host_address = json.loads(subprocess.run([sys.executable, "-m", "bitswarm", "identity", "show", "--json"],
                                             env=host_env, capture_output=True, text=True, check=True).stdout)["address"]
    for r in (0, 1):
        line = host.wait_for(f"round   {r}  ")
        if "no update" not in line:  # a round whose groups all tie trains nothing and claims nothing
            assert "recorded on chain" in line, out
            assert owner.swarm_submission(first + r, host_address)["status"] == "open"
