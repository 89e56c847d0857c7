"""Limits of a query, in a module of their own: the config and the CLI check against them without importing the
query layer (numpy, the stores)."""

MAX_K = 1000  # the most results one query returns
MAX_OFFSET = 2000  # the deepest page of a search (a timeline pages further by cursor)
