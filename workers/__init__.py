"""Worker-backend plugins (entry-point group ``katibx.workers``) and their contract."""

from workers.base import Backend, TrialEvent, TrialExited, TrialJob, TrialMetrics, TrialStartError
from workers.local import LocalBackend

__all__ = ["Backend", "LocalBackend", "TrialEvent", "TrialExited", "TrialJob", "TrialMetrics", "TrialStartError"]
