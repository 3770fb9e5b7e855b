"""The unit tier (`make check`): no process started, no socket but a loopback fake served in
the test's own process; the whole tier runs in well under 90 s."""
