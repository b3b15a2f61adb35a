"""Tier partitions: every training and evaluation asset exists once per tier."""

from dagster import StaticPartitionsDefinition

from srl_platform.tiers import TIER_NAMES

tier_partitions = StaticPartitionsDefinition(list(TIER_NAMES))
