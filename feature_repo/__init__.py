"""Feast definitions and the push/read client (issue 5)."""
