"""Coverage-guided fuzzing of the protocol core (``python -m fuzz --help``, fuzz/README.md)."""
