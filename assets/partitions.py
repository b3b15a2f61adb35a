"""Partitions: tier partitions for training and evaluation, daily ones for generated traces."""

import os

from dagster import DailyPartitionsDefinition, StaticPartitionsDefinition

from srl_platform.tiers import TIER_NAMES

tier_partitions = StaticPartitionsDefinition(list(TIER_NAMES))
"""Every training and evaluation asset exists once per tier."""

daily_partitions = DailyPartitionsDefinition(
    start_date="2026-11-01", timezone=os.environ.get("SRL_NIGHTLY_TIMEZONE", "UTC"), end_offset=1)
"""One partition per night of trace generation, keyed by the date it runs (today included)."""
