"""verify: checking training results by re-execution (and, next, the dispute game)."""
