"""The `bitswarm` command."""
