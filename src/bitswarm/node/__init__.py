"""The long-running node: its data directory, config, identity and (later) roles and HTTP API."""
