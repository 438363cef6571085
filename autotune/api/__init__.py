"""The REST API (FastAPI) over :class:`autotune.service.StudyService`.

``create_app`` in :mod:`autotune.api.app` is the composition root; ``autotune serve`` runs it.
"""

from autotune.api.app import create_app

__all__ = ["create_app"]
