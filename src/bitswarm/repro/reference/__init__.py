"""The executable spec: numpy implementations whose operation order every kernel must reproduce."""
