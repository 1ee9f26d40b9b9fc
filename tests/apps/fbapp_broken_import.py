"""A module whose own import fails: the APP argument itself is fine."""

import fbapp_missing_dependency  # noqa: F401

app = None
