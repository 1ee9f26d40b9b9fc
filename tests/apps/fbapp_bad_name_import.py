"""A module that imports a name its dependency does not have."""

from os import no_such_name  # noqa: F401

app = None
