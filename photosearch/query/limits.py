"""Limits of a query, in a module of their own: the config and the CLI check against them without importing the
query layer (numpy, the stores)."""

MAX_K = 1000  # the most results one query returns
