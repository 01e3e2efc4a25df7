"""Pydantic models of the wire contract (docs: ../shared/design/api.md)."""
