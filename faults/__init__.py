"""Fault injectors: each knows how to inject, how to undo (as data), and journals both."""
