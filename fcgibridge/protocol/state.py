"""Every per-request state rule of the application role, in one table.

Rule 1. A record carries a request id. Id 0 is for management records (GET_VALUES);
        any other id is *inactive* until BEGIN_REQUEST makes it active. Spec 3.3: "While
        a request ID R is inactive, the application ignores records with requestId == R,
        except for FCGI_BEGIN_REQUEST records", so such a record is dropped silently.

Rule 2. An active request moves through the states below. A record that has no row for
        the request's current state does not fit: the core reports it as ``BadRecord``,
        drops it, and fails the request (its further records are dropped until the
        caller ends it). It never tears the connection down, so other requests
        multiplexed on the same connection carry on.

Rule 3. ABORT_REQUEST on an active request moves it to ABORTED (the caller ends it
        promptly); records for an ABORTED or FAILED request are dropped, except that an
        empty STDIN for a FAILED request is noted: its body is complete (Rule 4).
        An ABORT_REQUEST while PARAMS is still arriving aborts a request the caller has
        never heard of (no RequestStarted yet), so nobody else could answer it: the core
        answers it itself (END_REQUEST, app status 1, REQUEST_COMPLETE; spec 5.4 wants an
        END_REQUEST for every request) and the id is inactive at once.

Rule 4. Ending a request (our END_REQUEST) while the web server may still be sending its
        body (in PARAMS, STDIN, or FAILED before the empty STDIN) moves it to DRAINING:
        the rest of the body is read and discarded until the empty STDIN record, so the
        web server is never cut off in the middle of writing the body (a broken pipe
        there becomes a 502 even though the app answered). Spec 6.3 sends no STDIN at
        all to an AUTHORIZER (nor does Apache's mod_authnz_fcgi), so an authorizer
        request never drains. A request ended in any other state becomes inactive at once.

Rule 5. Our END_REQUEST makes the id inactive as far as the web server knows (spec 3.3).
        So a DRAINING request drops every record but the empty STDIN silently (never a
        BadRecord the caller would answer with a second END_REQUEST), does not count
        against FCGI_MAX_REQS or FCGI_MPXS_CONNS, and gives way to a BEGIN_REQUEST
        reusing its id.

Rule 6. A FILTER request (spec 6.4) reads a second stream after its body: the web
        server sends PARAMS, then STDIN, then the FCGI_DATA stream (the file to filter;
        its size and mtime are the FCGI_DATA_LENGTH and FCGI_DATA_LAST_MOD params). So
        its empty STDIN leads to DATA, not RESPONDING; DATA before the body ended does
        not fit (Rule 2); the end of its input, for draining (Rule 4) and a FAILED
        request alike, is the empty DATA record. It has a table of its own,
        :data:`FILTER_TRANSITIONS`, the responder's with these rows changed.

           PARAMS ──empty PARAMS──▶ STDIN ──empty STDIN──▶ RESPONDING
             │                        │     (FILTER: ─▶ DATA ──empty DATA──▶ RESPONDING)
             │                        │                       │
             └────── end_request ─────┴──▶ DRAINING           └─ end_request ─▶ inactive
                                             └──empty STDIN (FILTER: empty DATA)──▶ inactive
"""

from __future__ import annotations

import enum

from .constants import RecordType


class RequestState(enum.Enum):
    PARAMS = "reading PARAMS"
    STDIN = "reading STDIN"
    DATA = "reading DATA (FILTER role)"
    RESPONDING = "STDIN complete, responding"
    DRAINING = "ended, draining STDIN"
    ABORTED = "aborted by the web server"
    FAILED = "failed by a bad record"

    # Members compare by identity: hashing them by identity too keeps the table and set
    # lookups of every record in C (Enum's own __hash__ is Python code).
    __hash__ = object.__hash__


class Step(enum.Enum):
    """What a fitting record does."""

    PARAMS_DATA = enum.auto()
    PARAMS_END = enum.auto()
    BODY_DATA = enum.auto()
    BODY_END = enum.auto()
    BODY_CLOSED = enum.auto()
    DATA_DATA = enum.auto()
    DATA_END = enum.auto()
    DISCARD = enum.auto()
    ABORT = enum.auto()
    ABORT_UNSTARTED = enum.auto()
    FORGET = enum.auto()


_S = RequestState
_T = RecordType

#: (state, record type, is the record empty) -> (what it does, next state or None for inactive)
TRANSITIONS: dict[tuple[RequestState, int, bool], tuple[Step, RequestState | None]] = {
    (_S.PARAMS, _T.PARAMS, False): (Step.PARAMS_DATA, _S.PARAMS),
    (_S.PARAMS, _T.PARAMS, True): (Step.PARAMS_END, _S.STDIN),
    (_S.STDIN, _T.STDIN, False): (Step.BODY_DATA, _S.STDIN),
    (_S.STDIN, _T.STDIN, True): (Step.BODY_END, _S.RESPONDING),
    (_S.DRAINING, _T.STDIN, False): (Step.DISCARD, _S.DRAINING),
    (_S.DRAINING, _T.STDIN, True): (Step.FORGET, None),
    (_S.FAILED, _T.STDIN, True): (Step.BODY_CLOSED, _S.FAILED),
}
for _state in (_S.STDIN, _S.RESPONDING):
    TRANSITIONS[(_state, _T.ABORT_REQUEST, True)] = (Step.ABORT, _S.ABORTED)
TRANSITIONS[(_S.PARAMS, _T.ABORT_REQUEST, True)] = (Step.ABORT_UNSTARTED, None)  # Rule 3
TRANSITIONS[(_S.DRAINING, _T.ABORT_REQUEST, True)] = (Step.FORGET, None)

#: The table of a FILTER request (Rule 6): the body is followed by the DATA stream.
FILTER_TRANSITIONS: dict[tuple[RequestState, int, bool], tuple[Step, RequestState | None]] = {
    **TRANSITIONS,
    (_S.STDIN, _T.STDIN, True): (Step.BODY_END, _S.DATA),
    (_S.DATA, _T.DATA, False): (Step.DATA_DATA, _S.DATA),
    (_S.DATA, _T.DATA, True): (Step.DATA_END, _S.RESPONDING),
    (_S.DATA, _T.ABORT_REQUEST, True): (Step.ABORT, _S.ABORTED),
    (_S.DRAINING, _T.STDIN, True): (Step.DISCARD, _S.DRAINING),
    (_S.DRAINING, _T.DATA, False): (Step.DISCARD, _S.DRAINING),
    (_S.DRAINING, _T.DATA, True): (Step.FORGET, None),
    (_S.FAILED, _T.DATA, True): (Step.BODY_CLOSED, _S.FAILED),
}
del FILTER_TRANSITIONS[(_S.FAILED, _T.STDIN, True)]  # a failed filter's input ends with DATA

#: States in which a record without a row is dropped silently, not a BadRecord (Rules 3, 5).
SILENT_STATES = frozenset({_S.ABORTED, _S.FAILED, _S.DRAINING})

#: States in which our END_REQUEST moves a request to DRAINING, if the web server may
#: still be sending its body (Rule 4); from any other state it becomes inactive at once.
DRAIN_ON_END = frozenset({_S.PARAMS, _S.STDIN, _S.DATA, _S.FAILED})

#: States in which the application may still write STDOUT/STDERR for the request.
WRITABLE_STATES = frozenset({_S.STDIN, _S.DATA, _S.RESPONDING, _S.FAILED})
