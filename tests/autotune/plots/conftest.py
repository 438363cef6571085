"""Fixtures of the figure tests."""

from __future__ import annotations

import pytest
from plot_helpers import make_study, make_trials

from autotune.models import Study, Trial


@pytest.fixture
def study() -> Study:
    return make_study()


@pytest.fixture
def trials() -> list[Trial]:
    return make_trials(60)
