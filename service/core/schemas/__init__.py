"""Pydantic models of the wire contract (docs/api.md)."""
