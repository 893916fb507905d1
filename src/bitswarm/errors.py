"""The root of every error a person can see.

Each package raises its own subclass (with a message that says what was wrong and what is
allowed); the CLI (cli.output) and the node's HTTP API (node.api) each map BitswarmError to a
message and an exit status or HTTP code in one place. Anything else reaching them is a bug.
"""

from __future__ import annotations


class BitswarmError(Exception):
    """Every error a user can see; the CLI and the API map it to a message in one place each."""
