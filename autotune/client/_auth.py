"""The API key an HTTP client sends: given, or ``AUTOTUNE_API_KEY`` from the environment."""

from __future__ import annotations

import os

__all__ = ["API_KEY_ENV", "auth_headers"]

API_KEY_ENV = "AUTOTUNE_API_KEY"


def auth_headers(api_key: str | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <key>"}``, or ``{}`` when there is no key.

    Args:
        api_key: the key; ``None`` reads ``AUTOTUNE_API_KEY`` (unset or empty: no key).
    """
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}
