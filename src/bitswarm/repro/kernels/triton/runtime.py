"""Where the triton kernels run, how numpy arrays get there and back, and the rules for bits.

With a CUDA device the kernels compile for it. Without one, triton's interpreter runs the same
kernel source on the CPU with numpy (TRITON_INTERPRET=1). triton reads that variable when a
kernel is decorated, so every kernel module imports this module before it defines a kernel.

What keeps a GPU's bits equal to the reference (each kernel module follows these):

* Every launch passes `LAUNCH` (enable_fp_fusion=False, enable_reflect_ftz=False): the compiler may not contract a
  multiply and an add into an fma; an fma happens only where `tl.fma` is written.
* Division and square root only through `tl.math.div_rn` / `tl.math.sqrt_rn`: on a GPU plain
  `/` and `sqrt` are approximate.
* No `tl.dot` (tensor cores reorder and round differently) and no `tl.sum` / `tl.max` /
  `tl.reduce` over floats (a tree order of the compiler's choosing): every reduction is an
  explicit loop in the order the reference documents.
* No `tl.exp`, `tl.log`, ...: the transcendentals are ours (`transcendental.py`), built from
  the primitives above and exact bit manipulation.

The model code works on numpy arrays; each op copies its inputs to the device and its results
back (on the CPU the interpreter reads the numpy memory in place). In-place ops write back into
the caller's arrays.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure to reach a GPU means "run interpreted"
        return False


def _interpret_triton_library() -> None:
    """Make triton's own @jit library functions (tl.zeros, tl.cdiv, ...) callable from interpreted
    kernels. triton builds them when it is first imported, for the mode of that moment, and torch
    can import triton before this module runs (transformers does, initialising a model); they
    would then be compiler functions, which an interpreted kernel cannot call."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for name, mod in list(sys.modules.items()):
        if name.startswith("triton.language") and mod is not None:
            for attr, value in list(vars(mod).items()):
                if isinstance(value, JITFunction) and not isinstance(value, InterpretedFunction):
                    setattr(mod, attr, InterpretedFunction(value.fn))


ON_GPU = os.environ.get("TRITON_INTERPRET", "0") != "1" and _cuda_available()
if not ON_GPU:
    triton_was_imported = "triton.language" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
    os.environ["TRITON_INTERPRET"] = "1"
    if triton_was_imported:
        _interpret_triton_library()

import torch  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
LAUNCH = {"enable_fp_fusion": False, "enable_reflect_ftz": False}  # no contraction; libdevice keeps subnormals
_TORCH = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
          np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32,
          np.dtype(np.uint32): torch.int32, np.dtype(np.bool_): torch.bool}


def to_device(x, dtype=np.float32) -> torch.Tensor:
    """A contiguous device tensor holding `x` (on the CPU: the same memory when possible)."""
    a = np.ascontiguousarray(x, dtype=dtype)
    if a.dtype == np.uint32:  # torch has no uint32 kernels; the bits travel as int32
        a = a.view(np.int32)
    if not a.flags.writeable:
        a = a.copy()
    t = torch.from_numpy(a)
    return t.to(DEVICE) if ON_GPU else t


def empty(shape, dtype=np.float32) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=_TORCH[np.dtype(dtype)], device=DEVICE)


def to_host(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def write_back(dst: np.ndarray, t: torch.Tensor) -> None:
    """Copy a device result into the caller's array (a no-op when `t` already is its memory)."""
    if not ON_GPU and t.data_ptr() == dst.__array_interface__["data"][0] and dst.flags.c_contiguous:
        return
    np.copyto(dst, to_host(t).reshape(dst.shape))


def in_place(dst: np.ndarray) -> torch.Tensor:
    """A device tensor for an array an op updates in place; pair it with `write_back`."""
    if not ON_GPU and dst.flags.c_contiguous and dst.flags.writeable and dst.dtype == np.float32:
        return torch.from_numpy(dst)
    return to_device(dst)
