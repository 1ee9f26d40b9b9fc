"""A module with a syntax error (one that CPython rejects when compiling it)."""

app = None
return app  # noqa: F706
