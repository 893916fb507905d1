"""Fast implementations of the reference ops, bit-identical to `bitswarm.repro.reference`."""
