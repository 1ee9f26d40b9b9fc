"""A module that crashes while being imported."""

raise RuntimeError("config file /etc/myapp.ini is missing")
