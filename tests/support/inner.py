"""Inner pytest runs: an experiment, or a test file planted for the purpose, run by pytest in
its own process as CI or an operator would run it, so it can fail, hang or be killed without
taking the outer session with it.

Every inner run starts from PYTEST: locust's own pytest plugin off (it would claim the
session's options) and no cache written into the checkout. Planted files run through pytest's
own `pytester` (`planted` in tests/conftest.py); experiments run from the repository root,
whose pyproject.toml gives them the project's options."""

from __future__ import annotations

import sys

PYTEST: tuple[str, ...] = (sys.executable, "-m", "pytest", "-p", "no:locust", "-p", "no:cacheprovider")
#: the same options for pytester.runpytest_subprocess, which supplies the interpreter itself
PLUGINS_OFF: tuple[str, ...] = PYTEST[3:]
