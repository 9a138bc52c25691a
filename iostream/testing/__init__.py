"""Fault-injection sockets and pytest helpers for users' own protocols (in progress)."""

from __future__ import annotations

__all__: list[str] = []
