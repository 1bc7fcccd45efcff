"""Job runners: the engine's only door to a job system (Hangfire's vocabulary)."""

from flowjobs.runtime.base import JobCall, JobRunner, JobState, step_job_id, trigger_job_id

__all__ = ["JobCall", "JobRunner", "JobState", "step_job_id", "trigger_job_id"]
