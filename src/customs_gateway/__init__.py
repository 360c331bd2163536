"""customs-gateway: a secure bilateral message gateway between two customs administrations."""

__version__ = "0.1.0"
