"""What composes targets into processes: the registry of targets, the CLI and the process app.

It sits above the gateway, the services and the operator (which read the registry's descriptors)
and above `coder.shared`, the library they all use. The import contracts in pyproject.toml keep it so.
"""
