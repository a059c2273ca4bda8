"""The Tornado application: REST handlers under ``/api/v1`` and the operator endpoints."""
