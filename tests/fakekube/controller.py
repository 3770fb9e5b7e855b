"""A controller's life in the fake API server: woken by every change to the store (and every
`tick_s` at the latest), it reconciles until stopped. An exception is kept in `errors` for
the test to show, and the loop goes on, as a real controller's work queue does."""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T", bound="Controller")


class Controller:
    thread_name = "fake-controller"

    def __init__(self, fake: Any, tick_s: float) -> None:
        self.fake, self.store, self.tick_s = fake, fake.store, tick_s
        self.errors: list[str] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """One reconcile pass over whatever the controller owns."""
        raise NotImplementedError

    def start(self: T) -> T:
        self._unsubscribe = self.store.subscribe(self._wake.set)
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._unsubscribe is not None:
            self._unsubscribe()

    def __enter__(self: T) -> T:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick()
            except Exception as exc:  # keep it alive; a test can read .errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
