"""Peer-to-peer collective RL post-training after SAPO (arXiv 2509.08721) and RL Swarm."""
