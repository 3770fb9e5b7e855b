"""Executors that act on the endpoint alone (a surge of load), so they run on every target; the
registry imports every module here."""
