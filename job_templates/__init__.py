"""Jinja batch-script templates (``<type>.sh.j2``), shipped as package data."""
