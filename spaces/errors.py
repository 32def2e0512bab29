"""Errors raised for invalid search-space / subnet input.

Every error names the offending field, the value that was given and what is allowed, so that a
NAS loop or an HTTP client can show the user something actionable (the service maps these to 4xx).
"""
from __future__ import annotations

from typing import Any, Sequence


class SpaceError(ValueError):
    """An encoding, choice or layer description that the hyperspace does not allow."""

    def __init__(self, field: str, value: Any, allowed: Sequence[Any] | str | None = None, hint: str = ""):
        self.field = field
        self.value = value
        self.allowed = allowed
        msg = f"{field}: {value!r} is not allowed"
        if allowed is not None:
            allowed_s = allowed if isinstance(allowed, str) else ", ".join(str(a) for a in allowed)
            msg += f"; allowed: {allowed_s}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def to_dict(self) -> dict[str, Any]:
        allowed = self.allowed if isinstance(self.allowed, (str, type(None))) else list(self.allowed)
        return {"field": self.field, "value": self.value, "allowed": allowed, "message": str(self)}
