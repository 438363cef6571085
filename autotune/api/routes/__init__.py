"""One router per resource; ``autotune.api.app`` mounts them under ``/v1``."""
