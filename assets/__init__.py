"""Dagster assets, one module per stage. Thin: they call `srl_platform` and describe the result."""
