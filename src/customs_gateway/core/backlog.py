"""Flow control between submission and delivery (decision 0018): how far submission is ahead.

The sender accepts a submission in a fraction of the CPU it takes to deliver one, so under a
load the two cores cannot carry, a gateway that accepts everything builds a queue that only
grows (and every message in it waits longer), while the CPU spent accepting is taken from
delivering. `Backlog` estimates the messages submitted and not yet planned into a delivery
batch, with hysteresis: `over` once the estimate passes `high`, until the worker has planned it
back down to half of that. The service holds new submissions (a bounded wait, then they go
through anyway) while it is over, the worker is planning batches (`holds`) and the peer link is
working; a failing link never holds anything (the queue is for outages).

The count is an estimate, and errs towards letting submissions through: a batch that is not
full means nothing more is due, so the count starts again from zero; submissions through other
replicas are not counted. Sans-I/O: the caller says what happened.
"""

from __future__ import annotations


class Backlog:
    """Submitted, not yet planned (estimated); `over` with hysteresis between `high` and `high // 2`.
    `high` 0 turns flow control off."""

    def __init__(self, high: int) -> None:
        if high < 0:
            raise ValueError("high must be 0 (off) or more")
        self.high = high
        self.count = 0
        self.over = False
        self.planned_at: float | None = None  # when the worker last planned a batch (monotonic s)

    def holds(self, now: float, fresh_for: float) -> bool:
        """Whether a submission should wait now: over, and the worker planned a batch within
        `fresh_for` seconds. A worker that is not planning (stopped, waiting for `recover`,
        between attempts) cannot bring the estimate down: waiting on it would only slow every
        submission by the whole wait."""
        return self.over and self.planned_at is not None and now - self.planned_at <= fresh_for

    def submitted(self, n: int = 1) -> None:
        """`n` new messages were committed to the outbox."""
        self.count += n
        if self.high and self.count > self.high:
            self.over = True

    def planned(self, n: int, full: bool, at: float) -> None:
        """The delivery worker took `n` due messages into a batch at `at`; `full`: as many as a
        batch holds (more may be due). A batch that is not full leaves nothing due behind it."""
        self.planned_at = at
        self.count = max(0, self.count - n) if full else 0
        if self.count <= self.high // 2:
            self.over = False
