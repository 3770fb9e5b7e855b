"""One error hierarchy for the whole suite.

The CLI turns a `UsageError` into one line on stderr and exit code 2; anything else
that is an `InferchaosError` is a failure of the target or of a fault (exit 1).
"""


class InferchaosError(Exception):
    """Base of every error the suite raises on purpose."""


class UsageError(InferchaosError):
    """Bad input from the person or the CI job: options, files, names. Exit code 2."""

    exit_code = 2


class TargetError(InferchaosError):
    """The target under test could not be started, reached or read."""


class ClusterStartError(UsageError):
    """The local cluster could not start as asked (port in use, HAProxy missing, a
    replica command that exits at once). These are set-up mistakes, hence exit 2."""


class FaultError(InferchaosError):
    """A fault could not be injected or reverted."""


class NotOnTarget(UsageError):
    """The fault has no implementation on this kind of target (wrong_answers needs the
    reference server). An experiment that asks for it is skipped there, not failed."""
