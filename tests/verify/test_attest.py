"""verify.attest on real tiny training runs: a verifier's attestation of a leaf is the trace root
it commits when that leaf is disputed, honest runs agree on it whatever their threads or
micro-batching, a bitflip run does not, and nothing a lazy verifier can copy equals it."""

import pytest
from eth_hash.auto import keccak

from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import prepare, run_training
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.attest import attestation, commitment
from bitswarm.verify.dispute import TrainReferee, TrainRun
from bitswarm.verify.game import GameError, Party, play, sides
from bitswarm.verify.trace import count_ops

STEPS = 6
BITFLIP = "bitflip@step=3,op=40"  # flips a bit in step 3, i.e. leaf 2
FLIPPED = 2


@pytest.fixture(scope="module")
def runs(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=STEPS).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
    root = tmp_path_factory.mktemp("attest")
    run_training(store, spec, root / "honest")
    run_training(store, spec, root / "honest-mb1", micro_batch=1, threads=1)
    run_training(store, spec, root / "bitflip", adversary=BITFLIP)
    return store, spec, root


def _sides(runs, *names: str) -> tuple[list[Party], int]:
    store, spec, root = runs
    n = count_ops(prepare(store, spec))
    comps = [TrainRun(root / name, prepare(store, spec), Adversary.load(root / name)) for name in names]
    return sides(comps, n), n


def test_the_attestation_is_the_trace_root_committed_in_a_dispute(runs):
    """Play the dispute between the bitflip run and the honest one: the trace root each side
    commits for the disputed leaf is its attestation of that leaf."""
    store, spec, _ = runs
    parties, n = _sides(runs, "bitflip", "honest")
    committed = {}
    for p in parties:
        def spy(k, p=p, commit=p.commit_trace):
            committed[p.name] = (k, commit(k))
            return committed[p.name][1]
        p.commit_trace = spy
    out = play(*parties, TrainReferee(prepare(store, spec)), n)
    assert (out.winner, out.leaf) == ("B", FLIPPED)
    for p in parties:
        k, (root, n_ops) = committed[p.name]
        assert (k, n_ops) == (FLIPPED, n)
        assert attestation(p, k) == root
    assert attestation(parties[0], FLIPPED) != attestation(parties[1], FLIPPED)


def test_honest_runs_agree_and_a_bitflip_run_differs_from_its_fault_on(runs):
    (honest, other), _ = _sides(runs, "honest", "honest-mb1")
    (flipped, _), _ = _sides(runs, "bitflip", "honest")
    for k in (0, FLIPPED - 1, FLIPPED, STEPS - 1):
        ours = attestation(honest, k)
        assert ours == attestation(other, k), f"honest runs disagree on leaf {k}"
        assert (ours == attestation(flipped, k)) == (k < FLIPPED), f"leaf {k}"


def test_nothing_public_is_the_attestation(runs):
    """What a lazy verifier can copy without re-executing (the result root, any leaf, the last
    leaf) never equals the attestation, and a commitment opens only for its own address."""
    (honest, _), _ = _sides(runs, "honest", "honest-mb1")
    public = {honest.root, *honest.log}
    for k in (0, STEPS - 1):
        value = attestation(honest, k)
        assert value not in public
        a, b = "0x" + "11" * 20, "0x" + "22" * 20
        assert commitment(value, a) == keccak(bytes.fromhex(value) + bytes.fromhex("11" * 20)).hex()
        assert commitment(value, a) != commitment(value, b)
    with pytest.raises(GameError, match="not in this result"):
        attestation(honest, STEPS)
