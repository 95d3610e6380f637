"""A long-text job's states and the sets of them each action accepts (the store and the rules share them)."""
from __future__ import annotations

PENDING, PROCESSING, PAUSED = "pending", "processing", "paused"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATUSES = (PENDING, "chunking", PROCESSING, PAUSED, COMPLETED, FAILED, CANCELLED)
ACTIVE = (PENDING, PROCESSING, PAUSED)
FINISHED = (COMPLETED, FAILED, CANCELLED)
PAUSABLE = (PENDING, PROCESSING)
CANCELLABLE = ACTIVE
RETRYABLE = (FAILED, CANCELLED)
