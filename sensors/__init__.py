"""Sensors and schedules that drive the asset graph."""
