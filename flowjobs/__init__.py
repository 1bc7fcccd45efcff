"""flowjobs: DAG flows with a full run history on the RQ workers and the Redis you already have."""

from flowjobs.client import FlowClient, RunHandle
from flowjobs.core.context import StepContext
from flowjobs.core.errors import (
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
from flowjobs.core.handlers import HandlerRegistry, StepResult, default_handlers, handler
from flowjobs.core.manifest import (
    FlowDefinition,
    FlowManifest,
    RetryPolicy,
    RunAfterCondition,
    StepMetadata,
    TriggerMetadata,
    TriggerType,
)
from flowjobs.core.records import FlowRunRecord, FlowStepAttemptRecord, FlowStepRecord, RunEvent
from flowjobs.core.registry import FlowRegistry
from flowjobs.core.statuses import RunStatus, StepStatus

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
