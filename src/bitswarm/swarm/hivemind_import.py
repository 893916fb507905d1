"""Importing hivemind: in full (the swarm's DHT process) or only its DHT and p2p parts (a node).

`import hivemind` runs its package __init__, which imports averaging, optimizers and
hivemind.utils.mpfuture, and with them torch: about 125 MB of a process's memory and a
second of start-up. A node needs none of that: it runs a DHTNode on its own event loop, and
DHTNode, P2P, the validators and the serializer never touch torch. `import_dht_parts()`
therefore puts "lazy" package objects for hivemind, hivemind.utils and hivemind.dht into
sys.modules before anything of hivemind is imported. A lazy package answers a name from the
torch-free submodules listed for it; any other name (hivemind.DHT, hivemind.utils.MPFuture)
runs the package's real __init__ in place first, so code that needs all of hivemind later
in the same process still gets it, torch included.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
import warnings
from typing import Any

# Per package, the torch-free submodules its __init__ re-exports names from.
_TORCH_FREE = {
    "hivemind": (),
    "hivemind.utils": ("asyncio", "logging", "nested", "performance_ema", "serializer", "timed_storage"),
    "hivemind.dht": ("node", "routing"),
}
_lock = threading.RLock()


def import_hivemind() -> Any:
    """All of hivemind (torch included), as the swarm's DHT processes use it."""
    # hivemind shares its futures' buffers through torch; the "file_system" strategy it picks by
    # default starts a torch_shm_manager process per node (~56 MB). File descriptors need none.
    os.environ.setdefault("HIVEMIND_MEMORY_SHARING_STRATEGY", "file_descriptor")
    # hivemind's import runs torch.jit.script, which warns about its own deprecation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with _lock:
            import hivemind

            _LazyPackage.complete(hivemind)
    return hivemind


def import_dht_parts() -> types.SimpleNamespace:
    """hivemind's DHTNode, P2P, PeerID, validators and DHT clock, without importing torch."""
    with _lock:
        if "hivemind" not in sys.modules:
            for name, submodules in _TORCH_FREE.items():
                _LazyPackage.install(name, submodules)
        from hivemind.dht.node import DHTNode
        from hivemind.dht.validation import CompositeValidator, DHTRecord, RecordValidatorBase
        from hivemind.p2p import P2P, PeerID
        from hivemind.utils.serializer import MSGPackSerializer
        from hivemind.utils.timed_storage import get_dht_time
    return types.SimpleNamespace(
        DHTNode=DHTNode, CompositeValidator=CompositeValidator, DHTRecord=DHTRecord,
        RecordValidatorBase=RecordValidatorBase, P2P=P2P, PeerID=PeerID,
        MSGPackSerializer=MSGPackSerializer, get_dht_time=get_dht_time,
    )


class _LazyPackage(types.ModuleType):
    """A package whose __init__ runs only when a name outside its torch-free submodules is asked for."""

    @classmethod
    def install(cls, name: str, submodules: tuple[str, ...]) -> None:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"{name} is not installed as a package")
        module = cls(name)
        module.__spec__, module.__path__, module.__package__ = spec, list(spec.submodule_search_locations), name
        module.__file__ = spec.origin
        object.__setattr__(module, "_submodules", submodules)
        object.__setattr__(module, "_complete", False)
        sys.modules[name] = module
        if "." in name:
            parent, _, child = name.rpartition(".")
            setattr(sys.modules[parent], child, module)

    @staticmethod
    def complete(module: types.ModuleType) -> None:
        """Run the real __init__ of a lazy package (and of its lazy parents) if it has not run."""
        if isinstance(module, _LazyPackage) and not module.__dict__["_complete"]:
            object.__setattr__(module, "_complete", True)
            module.__spec__.loader.exec_module(module)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # __all__, __wrapped__, ...: only what the real package defines
            if self.__dict__["_complete"]:
                raise AttributeError(attr)
        elif f"{self.__name__}.{attr}" in sys.modules:  # a submodule still being imported
            return sys.modules[f"{self.__name__}.{attr}"]
        else:
            for sub in self.__dict__["_submodules"]:
                module = importlib.import_module(f"{self.__name__}.{sub}")
                if attr in vars(module):
                    value = vars(module)[attr]
                    setattr(self, attr, value)
                    return value
        if self.__dict__["_complete"]:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        with _lock:
            _LazyPackage.complete(self)
        return getattr(self, attr)
