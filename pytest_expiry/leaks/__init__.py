"""Leak detection (``--expiry-leaks``), which needs no deadline: ``plugin`` (the hooks),
``processes`` (processes a test left running), ``threads`` (busy non-daemon threads)."""
