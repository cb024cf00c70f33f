"""Whole numbers from query strings, bounded before they reach the index
(a 20-digit page or limit would overflow the database's integers: 500)."""

from __future__ import annotations

from typing import Any

from flask import abort

MOST = 10**9


def whole(args: Any, name: str, default: int, least: int = 0, most: int = MOST) -> int:
    """``args[name]`` as an int in [least, most], else 400 saying so."""
    given = args.get(name, "")
    if given in ("", None):
        return default
    try:
        value = int(given)
    except ValueError:
        abort(400, description=f"{name}: a whole number")
    if not least <= value <= most:
        abort(400, description=f"{name}: from {least} to {most}")
    return value
