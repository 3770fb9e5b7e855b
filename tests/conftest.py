"""Fixtures for the suite's own tests (the experiments' wiring lives in the top-level conftest)."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.support.inner import PLUGINS_OFF


def pytest_configure(config: pytest.Config) -> None:
    # pytester serves `planted`; a conftest below the root may not name it in pytest_plugins
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture
def planted(pytester: pytest.Pytester) -> Callable[..., pytest.RunResult]:
    """Run a test file planted for the purpose in its own pytest process (pytest's pytester),
    so it can fail or be killed without taking this session with it. Its folder has a bare
    pytest.ini: the project's options stay out of it, the installed plugin loads."""

    def run(source: str, timeout: float = 120) -> pytest.RunResult:
        pytester.makeini("[pytest]\n")
        pytester.makepyfile(test_inner=source)
        return pytester.runpytest_subprocess("-q", *PLUGINS_OFF, timeout=timeout)

    return run
