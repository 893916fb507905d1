"""repro: the reproducibility contract; the same job gives the same bits on every honest device.

Rules (DESIGN.md): IEEE-754 binary32 tensors, round to nearest even, subnormals kept; only
correctly rounded + - * / sqrt fma; every reduction in a fixed, documented order; own
transcendentals; batch invariance; counter-based randomness; canonical hashing. `reference` is
the executable spec in numpy; `kernels.cpu` (numba) must match it bit for bit.

This package imports nothing else of bitswarm.
"""

REPRO_VERSION = "1"
