"""Command-line interface: the only place that prints for people and exits with codes."""
