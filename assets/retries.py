"""Retry policy for steps that read or write the artefact store (which may be S3).

Exponential backoff with jitter, so several tiers retrying after the same outage do not hit the
store in lockstep. Training steps can afford it: a retried training job resumes from its checkpoint.
"""

from dagster import Backoff, Jitter, RetryPolicy

storage_retry_policy = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL,
                                   jitter=Jitter.PLUS_MINUS)
