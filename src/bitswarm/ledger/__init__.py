"""The on-chain ledger: Vyper contracts for credits, node stakes, the job market and dispute game, and the RL swarm."""
