"""The admin of scans: importing the submodules registers every page (Django's autodiscover
imports this package)."""

from . import beat, operations, rulebase, scans, task_results
from .beat import WatchedPeriodicTaskAdmin
from .operations import (
    AnswerCacheEntryAdmin,
    DeadLetterAdmin,
    TaskAttemptAdmin,
    VisionCacheEntryAdmin,
)
from .rulebase import CategoryAdmin, ItemAdmin, SituationTagAdmin
from .scans import ScanAdmin, ScanBatchAdmin, ScanEventAdmin
from .task_results import TaskHistoryAdmin

__all__ = [
    "AnswerCacheEntryAdmin",
    "CategoryAdmin",
    "DeadLetterAdmin",
    "ItemAdmin",
    "ScanAdmin",
    "ScanBatchAdmin",
    "ScanEventAdmin",
    "SituationTagAdmin",
    "TaskAttemptAdmin",
    "TaskHistoryAdmin",
    "VisionCacheEntryAdmin",
    "WatchedPeriodicTaskAdmin",
    "beat",
    "operations",
    "rulebase",
    "scans",
    "task_results",
]
