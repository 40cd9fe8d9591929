"""A scope's state: what :class:`~pytest_expiry.scope.ScopeGuard` writes and everyone reads.

States: ``armed -> expired(phase) -> answered -> released`` (or ``pending`` when its deadline
passed between phases). Only the guard that armed a scope writes it.
"""

from __future__ import annotations

__all__ = ["ActiveScope"]


class ActiveScope:
    """A scope's state, written by its :class:`~pytest_expiry.scope.ScopeGuard` alone and
    read by anyone. ``seconds`` is its length, ``deadline`` the point in time (on
    :func:`~pytest_expiry.clock.clock`) it ends. (A plain class with slots: one is made per
    test, and a dataclass costs start-up time.)"""

    __slots__ = (
        "answer_on_expiry",
        "answered",
        "armed_at",
        "deadline",
        "expired_after",
        "expired_deadline",
        "expired_in",
        "nodeid",
        "owner",
        "pending",
        "released",
        "seconds",
    )

    def __init__(
        self,
        nodeid: str,
        seconds: float,
        armed_at: float,
        deadline: float,
        *,
        answer_on_expiry: bool = False,
        owner: object = None,
    ) -> None:
        self.nodeid = nodeid
        self.seconds = seconds
        self.armed_at = armed_at
        self.deadline = deadline
        self.answer_on_expiry = answer_on_expiry
        self.owner: object = owner  # what it was armed for (the item): a cheap identity check
        self.expired_in: str | None = None
        self.expired_after = 0.0
        self.expired_deadline = 0.0
        self.pending = False  # the deadline passed between phases: expire at the next one
        self.answered = False  # the expiry was answered: what remains has a fresh deadline
        self.released = False

    def __repr__(self) -> str:
        return f"ActiveScope({self.nodeid!r}, {self.seconds:g} s, {self.state})"

    @property
    def state(self) -> str:
        """``armed``, ``pending`` (its deadline passed between phases), ``expired`` (in
        :attr:`expired_in`), ``answered`` or ``released``."""
        if self.released:
            return "released"
        if self.expired_in is None:
            return "pending" if self.pending else "armed"
        return "answered" if self.answered else "expired"
