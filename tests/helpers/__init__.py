"""Test helpers shared by several test files (not tests themselves; pytest collects
nothing here). Fixtures built on them live in ``tests/conftest.py``."""
