"""Benchmarks of socketio_adapters; see benchmarks/README.md."""
