"""Jinja batch-script templates, one per batch system (``<type>.sh.j2``), shipped as package data."""
