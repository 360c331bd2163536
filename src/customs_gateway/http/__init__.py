"""HTTP edges: the local API (back-ends, admins, auditors) and the peer API (mutual TLS)."""
