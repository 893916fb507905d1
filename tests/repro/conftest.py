"""Fixtures for repro tests: the tiny model loaded into repro, on a chosen backend."""

import numpy as np
import pytest

from bitswarm.repro.backend import get_backend
from bitswarm.repro.config import LlamaConfig
from bitswarm.repro.model import Llama
from bitswarm.repro.weights import load_params


@pytest.fixture(scope="session")
def tiny_dir(tiny_model_store):
    s, cid = tiny_model_store
    return s.checkout(cid)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_dir):
    return LlamaConfig.from_dir(tiny_dir)


@pytest.fixture
def tiny_llama(tiny_dir, tiny_cfg):
    def make(backend: str = "numba") -> Llama:
        return Llama(tiny_cfg, load_params(tiny_dir, tiny_cfg), get_backend(backend))

    return make


def bits(x) -> bytes:
    return np.ascontiguousarray(x).tobytes()
