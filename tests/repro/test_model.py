"""The repro Llama: agrees with transformers, and numba gives the reference's bits."""

import numpy as np
import pytest
import torch

from bitswarm.repro.hashing import merkle_root, state_hash, tensor_hash
from tests.repro.conftest import bits


def _ids(seed, b, t, vocab):
    return np.random.default_rng(seed).integers(3, vocab, size=(b, t)).astype(np.int64)


def test_logits_agree_with_transformers(tiny_dir, tiny_llama, tiny_cfg):
    from transformers import AutoModelForCausalLM

    ids = _ids(0, 2, 24, tiny_cfg.vocab_size)
    ours, _ = tiny_llama("numba").forward(ids)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)).logits.reshape(-1, tiny_cfg.vocab_size).numpy()
    assert np.max(np.abs(ours - theirs)) < 1e-4


def test_numba_forward_and_backward_equal_reference_bit_for_bit(tiny_llama, tiny_cfg):
    ids = _ids(1, 2, 9, tiny_cfg.vocab_size)
    results = {}
    for name in ("reference", "numba"):
        model = tiny_llama(name)
        logits, tape = model.forward(ids, keep=True)
        grads = model.zero_grads()
        dlogits = model.B.cross_entropy_bwd(logits, np.roll(ids, -1, 1).reshape(-1), np.full(ids.size, 1 / ids.size, np.float32))
        model.backward(tape, dlogits, grads)
        results[name] = (logits, model.finish_grads(grads))
    ref_logits, ref_grads = results["reference"]
    nb_logits, nb_grads = results["numba"]
    assert bits(ref_logits) == bits(nb_logits)
    assert sorted(ref_grads) == sorted(nb_grads)
    for k in ref_grads:
        assert bits(ref_grads[k]) == bits(nb_grads[k]), k


def test_gradients_agree_with_torch_autograd(tiny_dir, tiny_llama, tiny_cfg):
    from transformers import AutoModelForCausalLM

    ids = _ids(2, 2, 12, tiny_cfg.vocab_size)
    targets = np.roll(ids, -1, 1).reshape(-1)
    model = tiny_llama("numba")
    logits, tape = model.forward(ids, keep=True)
    grads = model.zero_grads()
    model.backward(tape, model.B.cross_entropy_bwd(logits, targets, np.full(ids.size, 1 / ids.size, np.float32)), grads)
    grads = model.finish_grads(grads)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    loss = torch.nn.functional.cross_entropy(hf(torch.from_numpy(ids)).logits.reshape(-1, tiny_cfg.vocab_size), torch.from_numpy(targets))
    loss.backward()
    for name, p in hf.named_parameters():
        ours = grads[name]
        theirs = p.grad.numpy()
        assert np.max(np.abs(ours - theirs)) <= 1e-5 + 1e-3 * np.max(np.abs(theirs)), name


def test_batch_invariance_of_logits(tiny_llama, tiny_cfg):
    ids = _ids(3, 4, 10, tiny_cfg.vocab_size)
    model = tiny_llama("numba")
    together, _ = model.forward(ids)
    alone, _ = model.forward(ids[2:3])
    assert bits(together.reshape(4, 10, -1)[2]) == bits(alone.reshape(10, -1))


def test_kv_cache_decoding_gives_full_forward_bits(tiny_llama, tiny_cfg):
    from bitswarm.repro.model import KVCache

    ids = _ids(4, 1, 12, tiny_cfg.vocab_size)
    model = tiny_llama("numba")
    full, _ = model.forward(ids)
    cache = KVCache()
    first, _ = model.forward(ids[:, :7], cache=cache)
    rest = [model.forward(ids[:, i : i + 1], cache=cache)[0] for i in range(7, 12)]
    assert bits(np.concatenate([first, *rest])) == bits(full)


def test_tensor_and_state_hash_are_canonical():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert tensor_hash(a) == tensor_hash(np.asfortranarray(a))
    assert tensor_hash(a) != tensor_hash(a.reshape(3, 2))
    assert tensor_hash(a) != tensor_hash(a.astype(np.int64))
    h = state_hash(3, [("x", a)])
    assert h != state_hash(4, [("x", a)]) and h != state_hash(3, [("y", a)])
    with pytest.raises(TypeError):
        tensor_hash(a.astype(np.float64))


def test_merkle_root_domain_separation():
    import hashlib

    leaf = lambda x: hashlib.sha256(b"\x00" + bytes.fromhex(x)).digest()  # noqa: E731
    xs = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    l0, l1, l2 = (leaf(x) for x in xs)
    n01 = hashlib.sha256(b"\x01" + l0 + l1).digest()
    assert merkle_root(xs) == hashlib.sha256(b"\x01" + n01 + l2).hexdigest()
    assert merkle_root(xs[:1]) == l0.hex()


def test_smollm2_logits_agree_with_transformers(smollm2_store):
    from transformers import AutoModelForCausalLM

    from bitswarm.repro.backend import get_backend
    from bitswarm.repro.config import LlamaConfig
    from bitswarm.repro.model import Llama
    from bitswarm.repro.weights import load_params

    store, cid = smollm2_store
    d = store.checkout(cid)
    cfg = LlamaConfig.from_dir(d)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.num_layers) == (9, 3, 30)
    ids = np.array([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308]], np.int64)
    ours, _ = Llama(cfg, load_params(d, cfg), get_backend("numba")).forward(ids)
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)).logits[0].numpy()
    assert np.max(np.abs(ours - theirs)) < 2e-3 * max(1.0, float(np.max(np.abs(theirs))))
    assert np.array_equal(ours.argmax(-1), theirs.argmax(-1))
