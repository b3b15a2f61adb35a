"""Dagster resources wrapping the core's clients; local and AWS variants behind one interface."""
