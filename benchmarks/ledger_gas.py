"""Gas for each step of a job's life (and the node and swarm calls), on the embedded devnet.

    .venv/bin/python benchmarks/ledger_gas.py [--steps 1024] [--ops 4096] [--markdown]

A job of `--steps` training steps and `--ops` ops per step is disputed with a divergence in the
middle step and the middle op, so the step and op bisections run their full ⌈log2⌉ rounds with
proofs of full depth; the solver's commit and the challenge each prove their last leaf (depth
⌈log2 steps⌉). Two referees vote with unequal stake on opposite sides; after the ruling
one vote is released (unlocked) and the other slashed to the winner. Leaves are random 32-byte
values: gas depends on tree shape, not on what the leaves hold.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ledger.chains import FAST, start_devnet  # noqa: E402

from bitswarm.ledger.client import CREDIT, ROLE_REFEREE, ROLE_SOLVER, ROLE_SWARM, ROLE_VERIFIER  # noqa: E402
from bitswarm.repro.hashing import merkle_root  # noqa: E402
from bitswarm.verify import merkle  # noqa: E402


def _last(leaves: list[str]) -> tuple[str, list[str]]:
    """A tree's last leaf (the result, proven at commit and at challenge) and its proof."""
    return leaves[-1], merkle.siblings(merkle.proof(leaves, len(leaves) - 1))


def _diverging(n: int, at: int) -> tuple[list[str], list[str]]:
    a = [secrets.token_hex(32) for _ in range(n)]
    b = a[:at] + [secrets.token_hex(32) for _ in range(n - at)]
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1024)
    ap.add_argument("--ops", type=int, default=4096)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    rows: list[tuple[str, int, int]] = []  # (action, gas of its dearest call, calls in this job)
    dispute_gas: list[int] = []  # every call of the disputed job from challenge to the last release

    def rec(action: str, receipts) -> None:
        receipts = receipts if isinstance(receipts, list) else [receipts]
        if action.startswith("dispute:") and action != "dispute: settle (deadline)":
            dispute_gas.extend(r.gas_used for r in receipts)
        if any(r[0] == action for r in rows):
            return  # the same call again in a later job costs the same
        gas = [r.gas_used for r in receipts]
        rows.append((action, max(gas), len(gas)))

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("BITSWARM_CACHE_DIR", str(Path(tmp) / "cache"))
        chain = start_devnet(Path(tmp) / "devnet")
        try:
            poster, solver, challenger, referee, peer, minority = (chain.ledger(i) for i in (1, 2, 3, 4, 5, 6))
            rec("node: register", solver.register("12D3KooWsolver", ROLE_SOLVER | ROLE_VERIFIER))
            challenger.register("12D3KooWchallenger", ROLE_VERIFIER)
            referee.register("12D3KooWreferee", ROLE_REFEREE)
            minority.register("12D3KooWminority", ROLE_REFEREE)
            rec("token: approve", solver.approve("NodeRegistry", 10**30))
            rec("node: stake", solver.transact("NodeRegistry", "stake", 100 * CREDIT))
            for lg in (challenger, referee):
                lg.stake(100 * CREDIT)
            minority.stake(50 * CREDIT)

            def post() -> int:
                poster._ensure_allowance("JobMarket", 10**30)
                rc = poster.transact("JobMarket", "post_job", bytes(32)[:-1] + b"\x01", 0, args.steps, args.ops,
                                     50 * CREDIT, 20 * CREDIT, 120, 0)
                rec("job: post", rc)
                return rc.event("JobPosted")["job_id"]

            # 1. unchallenged
            job = post()
            rec("job: claim", solver.claim_job(job))
            cid = secrets.token_hex(32)
            la = [secrets.token_hex(32) for _ in range(args.steps)]
            rec("job: commit result (last leaf proven)", solver.commit_result(job, merkle_root(la), cid, *_last(la)))
            poster.increase_time(121)
            rec("job: finalize (no challenge)", poster.finalize(job))

            # 2. disputed to a referee vote
            sa, sb = _diverging(args.steps, args.steps // 2)
            job = post()
            solver.claim_job(job)
            solver.commit_result(job, merkle_root(sa), cid, *_last(sa))
            rec("dispute: challenge (last leaf proven)", challenger.challenge(job, merkle_root(sb), *_last(sb)))
            step_rx = []
            while (d := poster.dispute(job))["phase"] == 1:
                i = d["index"]
                for lg, leaves in ((solver, sa), (challenger, sb)):
                    step_rx.append(lg.respond_step(job, leaves[i], [s for _, s in merkle.proof(leaves, i)]))
            rec("dispute: step answer (with proof)", step_rx)
            oa, ob = _diverging(args.ops, args.ops // 2)
            rec("dispute: commit trace", [solver.commit_trace(job, merkle_root(oa), args.ops),
                                          challenger.commit_trace(job, merkle_root(ob), args.ops)])
            op_rx = []
            while (d := poster.dispute(job))["phase"] == 3:
                i = d["index"]
                for lg, leaves in ((solver, oa), (challenger, ob)):
                    op_rx.append(lg.respond_op(job, leaves[i], [s for _, s in merkle.proof(leaves, i)]))
            rec("dispute: op answer (with proof)", op_rx)
            rec("dispute: referee vote (stake-weighted)", [referee.vote(job, True), minority.vote(job, False)])
            poster.increase_time(FAST.vote_timeout + 1)
            rec("dispute: settle (vote)", poster.settle(job))
            rec("dispute: release vote (majority: unlocked)", poster.release_vote(job, referee.address))
            rec("dispute: release vote (minority: slashed)", poster.release_vote(job, minority.address))

            # 3. a party that stops answering
            job = post()
            solver.claim_job(job)
            solver.commit_result(job, merkle_root(sa), cid, *_last(sa))
            challenger.challenge(job, merkle_root(sb), *_last(sb))
            poster.increase_time(FAST.round_timeout + 1)
            rec("dispute: settle (deadline)", poster.settle(job))

            # swarm and unbonding
            peer.register("12D3KooWpeer", ROLE_SWARM)
            peer.stake(100 * CREDIT)  # a submission locks swarm_stake
            rec("swarm: submit", peer.swarm_submit(1, secrets.token_hex(32), 0.5, secrets.token_hex(32)))
            owner = chain.ledger(0)
            rec("swarm: advance round", owner.swarm_advance_round())
            rec("node: request unbond", solver.request_unbond(10 * CREDIT))
            poster.increase_time(FAST.unbond_delay + 1)
            rec("node: withdraw", solver.withdraw())
        finally:
            chain.stop()

    if args.markdown:
        print(f"| step ({args.steps} training steps, {args.ops} ops) | gas per call (dearest) | calls per job |")
        print("|---|---:|---:|")
        for action, gas, n in rows:
            print(f"| {action} | {gas:,} | {n} |")
        print(f"| **the whole dispute, challenge to last release (sum)** | {sum(dispute_gas):,} | {len(dispute_gas)} |")
    else:
        for action, gas, n in rows:
            print(f"{action:<44} {gas:>10,}  x{n}")
        print(f"{'the whole dispute (sum)':<44} {sum(dispute_gas):>10,}  x{len(dispute_gas)}")


if __name__ == "__main__":
    main()
