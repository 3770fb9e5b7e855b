"""The live status: redrawn in place on a terminal, plain throttled lines in a log."""

from __future__ import annotations

import io

from inferchaos.progress import CLEAR, Progress, Status

STATUS = Status("spot", "hold", 4.25, 131.5, 2, 97.4, 2, 3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recorder(tty: bool):
    out: list[tuple[str, str]] = []
    clock = Clock()
    progress = Progress(lambda text: out.append(("line", text)), (lambda text: out.append(("raw", text))) if tty
                        else None, clock=clock)
    return progress, out, clock


def test_status_line_shows_what_the_operator_needs():
    line = STATUS.line()
    assert line == "spot: hold       4.2s left   131.5 req/s  errors 2  p99 97 ms  replicas ready 2/3"
    assert "p99 -" in Status("x", "baseline", 1, 0, 0, None, 3, 3).line()


def test_on_a_terminal_the_status_is_redrawn_in_place_and_cleared_for_events():
    progress, out, clock = recorder(tty=True)
    progress.status(STATUS)
    clock.now += 0.1
    progress.status(STATUS)  # within refresh_s: not redrawn
    clock.now += 0.5
    progress.status(STATUS)
    progress.say("spot: revert")
    progress.done()
    assert out == [("raw", CLEAR + STATUS.line()), ("raw", CLEAR + STATUS.line()), ("raw", CLEAR),
                   ("line", "spot: revert")]


def test_in_a_log_the_status_is_a_plain_line_every_few_seconds():
    progress, out, clock = recorder(tty=False)
    for _ in range(8):  # 4 s of ticks at 0.5 s: drawn at 0 s and 2 s
        progress.status(STATUS)
        clock.now += 0.5
    progress.say("spot: revert")
    progress.done()
    assert out == [("line", STATUS.line())] * 2 + [("line", "spot: revert")]
    assert not any(CLEAR in text for _, text in out)


def test_force_draws_at_once():
    progress, out, clock = recorder(tty=False)
    progress.status(STATUS)
    progress.status(STATUS, force=True)
    assert len(out) == 2


def test_to_stream_uses_the_stream_s_own_tty_answer():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, tty = io.StringIO(), Tty()
    Progress.to_stream(plain).status(STATUS)
    Progress.to_stream(tty).status(STATUS)
    assert plain.getvalue() == STATUS.line() + "\n"
    assert tty.getvalue() == CLEAR + STATUS.line()
