"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test gets its own RLSEC_HOME, so no cache leaks between tests or from the user."""
    monkeypatch.setenv("RLSEC_HOME", str(tmp_path_factory.mktemp("rlsec-home")))


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)
