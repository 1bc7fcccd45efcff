"""The HTTP API under ``/flows/api`` (SPEC §8): flows, runs, schedules and health, camelCase JSON."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()


@router.get("/health")
def health() -> dict[str, object]:
    """Placeholder."""
    return {"status": "ok"}
