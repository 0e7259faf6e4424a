"""Developmental stages (placeholder init while building)."""
