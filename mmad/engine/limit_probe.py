"""Is a 429 about our pace, or about the server? Decide before slowing down for good.

A provider answers 429 for two reasons. Either the client sends faster than its limit: then the
share of 429s falls when the client slows down (a token bucket at limit L refuses 1 - L/rate of
the requests). Or the provider is overloaded and refuses a share of requests whatever the pace:
then slowing down helps nobody, and a controller that lowers the rate on every 429 ends at its
floor (10 % random 429s used to hold a run at 10 % of its limit).

A decrease goes to what got through: at a 429 share s the rate is multiplied by (1 - s) x 0.97
(between x0.3 and x0.9), which is just under a token bucket's limit if our pace is the cause.
Made at a modest share it is a probe: the 429 share of the requests sent at the lower rate is
compared with what each cause predicts: our pace, about nothing; the server, s again. The
decrease is kept when the share fell below the midpoint of the two, and undone when it did not,
together with earlier kept decreases whose share was no higher ("cap the total decrease while
the share stays flat"). The flat share
becomes the server's background: a 429 at that share only makes its own job wait; a share
significantly above it (binomial tail < 0.1 %) is news again and starts the next probe. A share
significantly over 30 % is never background (a server refusing a third of the requests at random
is down, or we are far over a limit): it lowers the rate at once, without a probe, and a probe
never undoes a decrease to such a share, nor one after which the share rose.

Only answers to requests sent at the current rate count (a `Ticket` carries the epoch it was sent
in); answers to requests sent before the last change say nothing about the current rate. Until
a rate has seen its first 429, its answers are not counted (a start-up burst the server allowed
would dilute the share); a probe counts every answer at its rate.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

MARGIN = 0.97  # a decrease aims this far under the rate that got through
STEPS = (0.3, 0.9)  # the smallest and largest multiplicative decrease
MIN_FACTOR = 0.05
RECOVERY_PER_S = 0.005  # linear recovery of the factor per second after a kept decrease
HIGH_SHARE = 0.3  # above this a share is never the server's background
LOW_SHARE = 0.03  # a share not significantly above this is noise whatever its cause (few requests wait)
EVIDENCE_SENT, EVIDENCE_LIMITED = 50, 8  # answers, or 429s, at one rate before its share is trusted
PACE_FLOOR = 0.02  # the share a token bucket still gives just under its limit
SURPRISE = 1e-3  # binomial tail under which a share is above the background
RISING = 0.01  # binomial tail under which a probe's share rose above the share before it
WINDOW = 200  # answers per epoch the shares are measured over
PROBE_MIN, PROBE_MAX = 20, 200  # answers a probe waits for (10 expected 429s at the old share)


class Verdict(Enum):
    NONE = "none"  # a success, nothing to do
    STALE = "stale"  # a 429 to a request sent before the last change: already acted on
    NEWS = "news"  # the first 429 at this rate, nothing known yet: pause everyone once
    NOISE = "noise"  # a 429 at the background share (or while a probe runs): only its job waits
    SLOWER = "slower"  # the rate was lowered: pause everyone
    KEPT = "kept"  # a probe found the decrease lowered the share
    UNDONE = "undone"  # a probe found it did not: the rate is back up


@dataclass
class Tally:
    """Answers to requests sent in one epoch: 429 or not, the last WINDOW of them."""

    answers: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    limited: int = 0

    def add(self, limited: bool) -> None:
        if len(self.answers) == self.answers.maxlen and self.answers[0]:
            self.limited -= 1
        self.answers.append(limited)
        self.limited += limited

    @property
    def sent(self) -> int:
        return len(self.answers)

    @property
    def share(self) -> float:
        return self.limited / self.sent if self.answers else 0.0


def step(share: float) -> float:
    """The multiplicative decrease at a 429 share: to what got through, a little under it."""
    return min(STEPS[1], max(STEPS[0], (1.0 - share) * MARGIN))


@dataclass
class Probe:
    factor: float  # the rate factor before the decrease
    share: float  # the 429 share measured there
    before: Tally
    needed: int

    @property
    def pace_share(self) -> float:
        """The share expected at the lower rate if our pace caused the 429s."""
        return max(PACE_FLOOR, 1.0 - (1.0 - self.share) / step(self.share))

    @property
    def midpoint(self) -> float:
        return (self.share + self.pace_share) / 2


def above(limited: int, sent: int, share: float, surprise: float = SURPRISE) -> bool:
    """Whether `limited` 429s of `sent` answers are significantly more than `share` predicts."""
    if sent == 0 or limited <= share * sent:
        return False
    if share <= 0:
        return True
    tail = sum(math.comb(sent, i) * share ** i * (1 - share) ** (sent - i) for i in range(limited, sent + 1))
    return tail < surprise


class LimitProbe:
    """The adaptive factor of the paced rate and what each 429 means for it."""

    def __init__(self) -> None:
        self.factor = 1.0
        self.epoch = 0
        self.background: float | None = None  # the server's own 429 share, once a probe found one
        self.decreases = 0
        self.undone = 0
        self._tally = Tally()
        self._probe: Probe | None = None
        self._kept: list[tuple[float, Tally]] = []  # decreases a probe kept: (factor before, share there)
        self._last_decrease = -math.inf
        self._last_recovery = -math.inf

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def record(self, epoch: int, limited: bool, now: float) -> Verdict:
        """Count one answer (429 or not) to a request sent in `epoch`; say what it means."""
        if epoch != self.epoch:
            return Verdict.STALE if limited else Verdict.NONE
        tally = self._tally
        if self._probe is None and not tally.answers and not limited:
            return Verdict.NONE  # no 429 at this rate yet: nothing to measure
        tally.add(limited)
        if limited and above(tally.limited, tally.sent, HIGH_SHARE):
            self._probe = None  # far over a limit (or a server that is down): no probe needed
            return self._decrease(now)
        if self._probe is not None:
            return self._judge(limited)
        if not limited:
            return Verdict.NONE
        if self.background is not None:
            return self._decrease(now) if above(tally.limited, tally.sent, self.background) else Verdict.NOISE
        if tally.sent >= EVIDENCE_SENT or tally.limited >= EVIDENCE_LIMITED:
            return self._decrease(now) if above(tally.limited, tally.sent, LOW_SHARE, RISING) else Verdict.NOISE
        first = tally.limited == 1 and self.decreases == 0
        return Verdict.NEWS if first else Verdict.NOISE

    def _decrease(self, now: float) -> Verdict:
        share = self._tally.share
        if not above(self._tally.limited, self._tally.sent, HIGH_SHARE):  # a modest share: probe it
            needed = min(PROBE_MAX, max(PROBE_MIN, math.ceil(10 / max(share, 1e-3))))
            self._probe = Probe(self.factor, share, self._tally, needed)
        self.factor = max(MIN_FACTOR, self.factor * step(share))
        self.decreases += 1
        self._last_decrease = now
        self._new_epoch()
        return Verdict.SLOWER

    def _judge(self, limited: bool) -> Verdict:
        probe, tally = self._probe, self._tally
        assert probe is not None, "judged only while a probe runs"
        flat = tally.limited > probe.midpoint * probe.needed  # the share can only end above the midpoint
        if not flat and tally.sent < probe.needed:
            return Verdict.NOISE if limited else Verdict.NONE
        self._probe = None
        rising = above(tally.limited, tally.sent, probe.share, RISING)
        if not flat or rising or tally.share > HIGH_SHARE:
            self._kept.append((probe.factor, probe.before))
            self._tally = Tally()  # measured again from the next 429 at this rate
            self.background = None  # a share a decrease lowered was not the server's own
            return Verdict.KEPT
        pooled = (probe.before.limited + tally.limited) / (probe.before.sent + tally.sent)
        self.background = max(pooled, PACE_FLOOR)
        restore = probe.factor
        while self._kept and not above(self._kept[-1][1].limited, self._kept[-1][1].sent, self.background):
            restore = self._kept.pop()[0]
        self.factor = max(self.factor, restore)
        self.undone += 1
        self._new_epoch()
        return Verdict.UNDONE

    def _new_epoch(self) -> None:
        self.epoch += 1
        self._tally = Tally()

    def recover(self, now: float) -> None:
        """Linear recovery since the last step, from one second after the last decrease; none while
        a probe measures the lower rate."""
        if self.factor < 1.0 and self._probe is None:
            since = max(self._last_recovery, self._last_decrease + 1.0)
            if now > since:
                self.factor = min(1.0, self.factor + RECOVERY_PER_S * (now - since))
        self._last_recovery = now
