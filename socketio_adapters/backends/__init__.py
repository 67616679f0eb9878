"""Backends: one module per broker, each only moves bytes (see ``base``)."""
