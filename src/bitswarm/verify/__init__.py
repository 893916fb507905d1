"""verify: re-execution, commitments, traces, adversaries, and the one dispute game for training, inference and eval."""
