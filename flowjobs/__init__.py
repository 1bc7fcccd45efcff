"""flowjobs: DAG flows with a full run history on the RQ workers and the Redis you already have."""

from flowjobs.client import FlowClient, RunHandle
from flowjobs.context import StepContext
from flowjobs.errors import (
    ExpressionError,
    FlowDisabled,
    FlowjobsError,
    FlowNotFound,
    FlowValidationError,
    HandlerNotFound,
    InvalidSignalPayload,
    InvalidTriggerData,
    RunNotFound,
    SignalAlreadyDelivered,
    SignalNotFound,
    TriggerNotFound,
)
from flowjobs.handlers import HandlerRegistry, StepResult, default_handlers, handler
from flowjobs.manifest import (
    FlowDefinition,
    FlowManifest,
    RetryPolicy,
    RunAfterCondition,
    StepMetadata,
    TriggerMetadata,
    TriggerType,
)
from flowjobs.records import FlowRunRecord, FlowStepAttemptRecord, FlowStepRecord, RunEvent
from flowjobs.registry import FlowRegistry
from flowjobs.statuses import RunStatus, StepStatus

__all__ = [
    "ExpressionError",
    "FlowClient",
    "FlowDefinition",
    "FlowDisabled",
    "FlowManifest",
    "FlowNotFound",
    "FlowRegistry",
    "FlowRunRecord",
    "FlowStepAttemptRecord",
    "FlowStepRecord",
    "FlowValidationError",
    "FlowjobsError",
    "HandlerNotFound",
    "HandlerRegistry",
    "InvalidSignalPayload",
    "InvalidTriggerData",
    "RetryPolicy",
    "RunAfterCondition",
    "RunEvent",
    "RunHandle",
    "RunNotFound",
    "RunStatus",
    "SignalAlreadyDelivered",
    "SignalNotFound",
    "StepContext",
    "StepMetadata",
    "StepResult",
    "StepStatus",
    "TriggerMetadata",
    "TriggerNotFound",
    "TriggerType",
    "default_handlers",
    "handler",
]
