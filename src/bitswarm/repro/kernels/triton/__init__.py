"""triton kernels, bit-identical to `bitswarm.repro.reference` (see `runtime` for the rules)."""
