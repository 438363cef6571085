"""Designers: the algorithms that propose configurations (pure; see ``_base``)."""

from autotune.designers._base import (
    Designer,
    Problem,
    designer_names,
    make_designer,
    register_designer,
)

__all__ = ["Designer", "Problem", "designer_names", "make_designer", "register_designer"]
