"""Swarm rounds recorded on the SwarmCoordinator contract of a real (devnet) chain: staked
claims, and an inflated claim refuted, voted down and slashed."""

from __future__ import annotations

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
