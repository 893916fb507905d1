"""Swarm rounds recorded on the SwarmCoordinator contract of a real (devnet) chain."""

from __future__ import annotations

import pytest

from bitswarm.ledger.client import ROLE_SWARM
from bitswarm.ledger.errors import RevertError
from bitswarm.swarm.coordinator import ChainCoordinator
from bitswarm.swarm.runner import LocalSwarm

from ..ledger.chains import start_devnet
from .conftest import FAST

pytestmark = pytest.mark.network


def test_each_peer_submits_its_round_to_the_chain(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    chain = start_devnet(tmp_path / "devnet")
    try:
        owner = chain.ledger(0)
        swarm = LocalSwarm(store, model, tmp_path / "swarm", tiny_mix, FAST)
        ledgers = {}
        for i, name in enumerate(("a", "b"), start=1):
            peer = swarm.add_peer(name)
            lg = chain.ledger(i)
            lg.register(f"12D3KooWswarm{name}", ROLE_SWARM)
            ledgers[peer.public_key] = lg
        coord = ChainCoordinator(ledgers, round_offset=owner.swarm_round() - swarm.round)
        swarm.coordinator = coord
        for p in swarm.peers.values():
            p.coordinator = coord
        for _ in range(2):
            reports = swarm.run_round()
            owner.swarm_advance_round()
        submitted = [r for p in swarm.peers.values() for r in p.history if r.get("submitted")]
        assert submitted, f"no peer submitted: {coord.errors}"
        for r in submitted:
            peer = next(p for p in swarm.peers.values() if r in p.history)
            lg = ledgers[peer.public_key]
            sub = lg._struct("SwarmCoordinator", "get_submission", r["round"] + coord.round_offset, lg.address)
            assert sub["step_root"].hex() == r["step_root"].removeprefix("sha256:")
            assert sub["reward"] == round(r["reward"] * 1_000_000)
        assert owner.call("SwarmCoordinator", "participation", ledgers[swarm.peers["a"].public_key].address) >= 1
        with pytest.raises(RevertError, match="already submitted|round"):
            lg.swarm_submit(r["round"] + coord.round_offset, r["dataset"], 0.0, r["step_root"])
        assert reports
    finally:
        chain.stop()
