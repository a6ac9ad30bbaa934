"""Whether the store answers, logged once per change: one line when it stops, one when it
answers again with how many requests were refused meanwhile.

Requests that fail because the store is down are answered 503 (with Retry-After) one by one;
logging each would write a line per request for as long as the outage lasts. `StoreHealth`
is told of every store call's outcome by the service (`engine.SearchService`) and logs only
the transitions. The traceback of the failure that opened an outage is logged too at
`--log-level debug`. A call's outcome counts only for the state it started in: one that
began before the outage and answers after it began (a node finishing its requests while it
shuts down) does not end it, and one that began before the store came back and fails
afterwards does not open a new one.

While the store is down, one request at a time calls it to find out whether it is back
(`admit`); the others are refused at once. A node that hangs rather than refuses (a frozen
process, a network that drops packets) would otherwise hold every request for the cluster
client's whole timeout and its retries, and callers would time out instead of getting a 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["StoreHealth"]

logger = logging.getLogger(__name__)


class StoreHealth:
    """Up or down, with the count of requests refused while down; thread-safe."""

    def __init__(
        self, log: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log or logger
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._up_since = clock()
        self.refused = 0  # requests refused in the current outage
        self.outages = 0  # outages seen by this process
        self._probing = False  # a request is finding out whether a down store is back

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def now(self) -> float:
        """The clock calls are started by (pass it back to `failed`)."""
        return self._clock()

    def admit(self) -> bool | None:
        """May a request call the store now? True: it answers; None: it is down and this
        request is the one that tries it (call `settled` when done); False: refused now
        (counted), another request is already trying the store."""
        if self._down_since is None:  # the common case, without the lock
            return True
        with self._lock:
            if self._down_since is None:
                return True
            if self._probing:
                self.refused += 1
                return False
            self._probing = True
            return None

    def settled(self) -> None:
        """The request that `admit` let try a down store has its answer."""
        with self._lock:
            self._probing = False

    def failed(self, exc: BaseException, *, started: float, request: bool = True) -> None:
        """A store call begun at `started` failed with `exc`; `request`: a request was refused
        for it (a readiness probe is not one)."""
        with self._lock:
            if self._down_since is None:
                if started < self._up_since:  # in flight when the store came back
                    return
                self._down_since = self._clock()
                self.refused = int(request)
                self.outages += 1
                opened = True
            else:
                self.refused += int(request)
                opened = False
        if opened:
            self._log.warning(
                "the store stopped answering: %s; requests get 503 until it answers again",
                exc,
                exc_info=exc if self._log.isEnabledFor(logging.DEBUG) else None,
            )

    def answered(self, *, started: float) -> None:
        """A store call begun at `started` succeeded: closes an outage (one line) if there
        was one when it began."""
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._down_since is None or started < self._down_since:
                return
            now = self._clock()
            lasted, refused = now - self._down_since, self.refused
            self._down_since, self._up_since, self.refused = None, now, 0
        self._log.warning(
            "the store answers again after %.1f s; %d request%s refused (503) meanwhile",
            lasted,
            refused,
            " was" if refused == 1 else "s were",
        )
