"""`python -m bitswarm` runs the `bitswarm` command."""

from bitswarm.cli.main import run

run()
