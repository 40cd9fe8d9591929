"""Specification tests for ``pytest_expiry.timer``.

This directory is a package so that its modules get names of their own (``timer.workers``
or ``tests.timer.workers``) and relative imports; spawn and forkserver children import
``workers`` by that name through the ``sys.path`` their parent hands them.
"""
