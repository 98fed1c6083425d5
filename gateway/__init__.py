"""gateway: the server side (SSH endpoint, registry, lock) - lands with its issue."""
