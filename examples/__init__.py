"""Example applications for fcgibridge (not part of the installed package)."""
