"""The ``iostream`` pytest plugin (in progress): inert unless its fixtures are used."""

from __future__ import annotations
