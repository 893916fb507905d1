"""Signed rollout records: wire format, every rejection reason, and the filter's bounds."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.swarm.records import (
    MAX_ROLLOUTS,
    RecordFilter,
    RecordRejected,
    Rollout,
    RolloutRecord,
    _signed_message,
    canonical_json,
    decode_verified,
    encode_signed,
    public_key_hex,
)

MAX = 64 * 1024


def rollout(i: int = 0, completion: str = "The answer is 42.") -> Rollout:
    return Rollout(dataset="gsm8k", seed=2**64 - 1, index=i, completion=completion, claimed_reward=0.5, group=1)


def record(priv: Ed25519PrivateKey, round: int = 3, seq: int = 0, n: int = 2, text: str = "x") -> RolloutRecord:
    return RolloutRecord(
        round=round, peer=public_key_hex(priv), seq=seq, rollouts=[rollout(i, f"{text} {i}") for i in range(n)]
    )


def envelope(body: dict, sig: object = None, **extra: object) -> bytes:
    env = {"record": body, "v": 1, **extra}
    if sig is not None:
        env["sig"] = sig
    return canonical_json(env)


def signed_by(signer: Ed25519PrivateKey, body: dict) -> bytes:
    """An envelope whose signature is by `signer`, whatever body["peer"] says."""
    return envelope(body, signer.sign(_signed_message(body)).hex())


@pytest.fixture
def alice() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def bob() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_round_trip(alice):
    rec = record(alice, n=3, text="ünïcødé ✓")
    blob = encode_signed(rec, alice)
    assert decode_verified(blob, max_bytes=MAX) == rec
    assert blob == encode_signed(rec, alice)  # Ed25519 and the encoding are deterministic
    assert json.loads(blob)["v"] == 1
    assert "ü".encode() in blob  # UTF-8, not \u escapes


def test_encode_refuses_a_foreign_peer_and_oversized_records(alice, bob):
    with pytest.raises(ValueError, match="peer"):
        encode_signed(record(bob), alice)
    big = RolloutRecord(
        round=0, peer=public_key_hex(alice), seq=0, rollouts=[rollout(i, "y" * 4096) for i in range(20)]
    )
    with pytest.raises(ValueError, match="over the"):
        encode_signed(big, alice)


def reject(blob: bytes, max_bytes: int = MAX) -> RecordRejected:
    with pytest.raises(RecordRejected) as info:
        decode_verified(blob, max_bytes=max_bytes)
    return info.value


def test_oversized_is_checked_before_parsing(alice):
    assert reject(b"{" * (MAX + 1)).reason == "oversized"  # would be "malformed" if parsed first
    blob = encode_signed(record(alice), alice)
    assert reject(blob, max_bytes=len(blob) - 1).reason == "oversized"
    decode_verified(blob, max_bytes=len(blob))


@pytest.mark.parametrize(
    "blob",
    [b"not json", b"\xff\xfe", b"[1,2]", b'"str"', b"{" * 5000, b'{"v":1,"sig":"aa","record":{},"x":1}',
     b'{"record":{},"sig":"aa","v":2}', b'{"record":{},"sig":"aa","v":true}',
     b'{"record":{"claimed_reward":NaN},"sig":"aa","v":1}'],
)
def test_malformed(blob):
    assert reject(blob).reason == "malformed"


def test_wrong_schema(alice):
    good = record(alice).model_dump(mode="json")
    sign = lambda body: signed_by(alice, body)
    cases = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "seq"},
        {**good, "round": -1},
        {**good, "round": "3"},  # strict: no string-to-int coercion
        {**good, "seq": 1.0},
        {**good, "peer": good["peer"].upper()},
        {**good, "rollouts": [good["rollouts"][0]] * (MAX_ROLLOUTS + 1)},
        {**good, "rollouts": [{**good["rollouts"][0], "completion": "z" * 4097}]},
        {**good, "rollouts": [{**good["rollouts"][0], "dataset": "d" * 65}]},
        {**good, "rollouts": [{**good["rollouts"][0], "seed": 2**64}]},
        {**good, "rollouts": [{**good["rollouts"][0], "group": True}]},
        "not an object",
    ]
    for body in cases:
        assert reject(sign(body) if isinstance(body, dict) else envelope(body, "ab" * 64)).reason == "schema", body


def test_unsigned(alice):
    body = record(alice).model_dump(mode="json")
    assert reject(envelope(body)).reason == "unsigned"
    assert reject(envelope(body, "")).reason == "unsigned"
    assert reject(canonical_json({"record": body, "sig": None, "v": 1})).reason == "unsigned"


def test_bad_signature(alice, bob):
    blob = encode_signed(record(alice), alice)
    sig = json.loads(blob)["sig"]
    flipped = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    assert reject(blob.replace(sig.encode(), flipped.encode())).reason == "bad_signature"
    assert reject(blob.replace(sig.encode(), b"zz" * 64)).reason == "bad_signature"
    assert reject(blob.replace(sig.encode(), sig[:-2].encode())).reason == "bad_signature"
    # A tampered record under the original signature.
    assert reject(blob.replace(b'"round":3', b'"round":4')).reason == "bad_signature"


def test_signature_by_another_key_than_peer(alice, bob):
    body = record(alice).model_dump(mode="json")  # claims to be alice's ...
    rej = reject(signed_by(bob, body))  # ... but bob signed it
    assert rej.reason == "bad_signature" and body["peer"][:16] in rej.detail


def test_only_the_canonical_encoding_is_accepted(alice):
    blob = encode_signed(record(alice), alice)
    spaced = json.dumps(json.loads(blob), sort_keys=True).encode()
    assert reject(spaced).reason == "non_canonical"
    assert reject(blob.replace(b'"claimed_reward":0.5', b'"claimed_reward":5e-1')).reason == "non_canonical"


# ---------------------------------------------------------------- filter


def test_filter_accepts_and_counts(alice, bob):
    f = RecordFilter()
    assert f.accept(encode_signed(record(alice), alice), current_round=3) == record(alice)
    assert f.accept(encode_signed(record(bob), bob), current_round=3) is not None
    assert f.accept(b"junk", current_round=3) is None
    assert f.accepted == 2 and f.dropped == {"malformed": 1}


def test_unknown_round(alice):
    f = RecordFilter(round_window=2)
    assert f.accept(encode_signed(record(alice, round=11), alice), current_round=10) is None  # future
    assert f.accept(encode_signed(record(alice, round=7), alice), current_round=10) is None  # too old
    assert f.accept(encode_signed(record(alice, round=8), alice), current_round=10) is not None
    assert f.dropped == {"unknown_round": 2}


def test_window_never_moves_back(alice):
    f = RecordFilter(round_window=1)
    old = encode_signed(record(alice, round=5), alice)
    assert f.accept(old, current_round=5) is not None
    assert f.accept(b"junk", current_round=9) is None  # state for round 5 is pruned here
    assert f.tracked_entries == 0
    # A caller that goes back to round 5 must not get the pruned record admitted again.
    assert f.accept(old, current_round=5) is None
    assert f.dropped["unknown_round"] == 1


def test_replayed(alice):
    f = RecordFilter()
    blob = encode_signed(record(alice, seq=0), alice)
    assert f.accept(blob, 3) is not None
    assert f.accept(blob, 3) is None  # same (peer, round, seq)
    assert f.accept(encode_signed(record(alice, seq=0, text="other"), alice), 3) is None  # same seq, new content
    assert f.accept(encode_signed(record(alice, seq=1), alice), 3) is None  # same content, new seq
    assert f.accept(encode_signed(record(alice, seq=1, text="other"), alice), 3) is not None
    assert f.dropped == {"replayed": 3}


def test_flooding(alice, bob):
    f = RecordFilter(max_records_per_peer_round=4)
    for seq in range(6):
        f.accept(encode_signed(record(alice, seq=seq, text=str(seq)), alice), 3)
    assert f.accepted == 4 and f.dropped == {"flooding": 2}
    assert f.accept(encode_signed(record(alice, round=2, seq=9), alice), 3) is not None  # per round
    assert f.accept(encode_signed(record(bob, seq=9), bob), 3) is not None  # per peer


def test_flood_from_one_peer_keeps_state_bounded(alice):
    f = RecordFilter(round_window=2, max_records_per_peer_round=4, max_peers_tracked=64)
    peer = public_key_hex(alice)
    for i in range(10_000):
        current = i // 500  # the swarm moves on while the flood goes on
        rec = RolloutRecord(round=max(0, current - i % 4), peer=peer, seq=i, rollouts=[rollout(i)])
        f.accept(encode_signed(rec, alice), current)
        assert f.tracked_entries <= f.round_window + 1  # one peer: one entry per live round
        assert f.tracked_records <= (f.round_window + 1) * f.max_records_per_peer_round
    assert f.accepted + sum(f.dropped.values()) == 10_000
    assert set(f.dropped) == {"flooding", "unknown_round"}  # i % 4 == 3 is just out of the window


def test_flood_of_fresh_keys_is_capped():
    f = RecordFilter(max_peers_tracked=64)
    keys = [Ed25519PrivateKey.generate() for _ in range(300)]
    for k in keys:
        assert f.accept(encode_signed(record(k), k), 3) is not None
        assert f.tracked_entries <= 64
    assert f.tracked_records <= 64 * f.max_records_per_peer_round
    # The oldest were evicted, the newest are still remembered.
    assert f.accept(encode_signed(record(keys[-1]), keys[-1]), 3) is None
    assert f.dropped == {"replayed": 1}


def test_group_caps_cut_groups_not_records(alice):
    f = RecordFilter(max_group_size=2, max_groups_per_peer_round=2)
    peer = public_key_hex(alice)

    def rec(seq: int, groups: list[int]) -> bytes:
        rollouts = [rollout(i, f"{seq}-{i}").model_copy(update={"group": g}) for i, g in enumerate(groups)]
        return encode_signed(RolloutRecord(round=3, peer=peer, seq=seq, rollouts=rollouts), alice)

    # Group 7 has three completions: cut; groups 1 and 2 fit.
    got = f.accept(rec(0, [1, 1, 7, 7, 7, 2]), 3)
    assert [ro.group for ro in got.rollouts] == [1, 1, 2]
    assert f.dropped == {"oversized_group": 1}
    # A third group is one too many; more completions for group 2 grow it up to the cap only.
    got = f.accept(rec(1, [3, 2]), 3)
    assert [ro.group for ro in got.rollouts] == [2]
    assert f.accept(rec(2, [2]), 3).rollouts == []
    assert f.dropped == {"oversized_group": 2, "too_many_groups": 1}
    # Within the caps a record comes back as it was.
    clean = RecordFilter(max_group_size=2, max_groups_per_peer_round=2)
    assert clean.accept(rec(0, [1, 1, 2]), 3) == RolloutRecord.model_validate(json.loads(rec(0, [1, 1, 2]))["record"])
    with pytest.raises(ValueError, match="positive"):
        RecordFilter(max_group_size=0)
