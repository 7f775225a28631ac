"""Worker-backend plugins (entry-point group ``katibx.workers``) and their contract."""

from katibx.workers.base import Backend, TrialEvent, TrialExited, TrialJob, TrialMetrics, TrialStartError
from katibx.workers.local import LocalBackend

__all__ = ["Backend", "LocalBackend", "TrialEvent", "TrialExited", "TrialJob", "TrialMetrics", "TrialStartError"]
