"""The web console for administrators and auditors (DESIGN §14, decision 0010)."""

from .routes import setup

__all__ = ["setup"]
