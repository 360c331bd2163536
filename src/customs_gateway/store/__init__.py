"""Durable storage edges: one interface (`base.Store`), SQLite by default, PostgreSQL to scale out."""
