"""The contract between the supervisor (the parent process) and its workers, written once.

A worker is a forked child of the supervisor. The parent speaks to it only by signals;
it answers on a pipe of single status bytes (:class:`Report`) and, in the end, with its
exit code (:class:`ExitCode`).

Signals the parent sends a worker:

- SIGTERM: stop gracefully, asking the app's ``stop()`` hook first, which may veto.
- :data:`RETIRE_SIGNAL` (SIGUSR2): stop gracefully without asking anyone (a reload, one
  worker fewer, a worker replaced).
- SIGINT (SIGQUIT reaches the workers as SIGINT too): stop now, dropping every connection.
- SIGHUP: restart the app in place if it has a ``restart()`` hook, else ask to be replaced.
- SIGUSR1: reopen the log files.
- :data:`STACK_SIGNAL` (SIGRTMIN+3 on Linux, SIGINFO on the BSDs and macOS): write every
  thread's Python stack to ``--slowlog`` (or the error log). Only with ``--timeout``, and
  only once the worker serves: the parent sends it to a worker whose request is still
  running past ``--timeout`` plus ``--timeout-grace`` (its event loop is blocked), just
  before it kills it. Until the worker has registered the dump (and for good without
  ``--timeout``) it ignores the signal, whose default action would end it. The others
  are taken (HUP, USR1, USR2, TERM, INT, QUIT above; TTIN
  and TTOU by the parent), WINCH comes with every terminal resize, and ALRM, PROF,
  VTALRM, URG, XCPU and PWR belong to apps, profilers, runtimes or the kernel.
- SIGKILL: a stopping worker that is still there past its deadline; a worker stuck in a
  request past ``--timeout`` plus ``--timeout-grace`` (:mod:`~fcgibridge.process.hardkill`).

What a worker reports, in the order it may report it:

1. :attr:`Report.READY`, once, when it serves: every listener accepts connections.
   Nothing comes before it. Until then the worker ignores SIGHUP, SIGUSR1 and SIGUSR2,
   so the parent sends SIGUSR2 again to a worker it retired before it was ready.
2. :attr:`Report.REPLACE_ME`, at most once: it wants a successor (SIGHUP without a
   restart hook, ``--max-requests`` reached, a request past ``--timeout`` in a thread
   that cannot be stopped). It keeps serving until the parent retires it. It may also
   come after ``S`` (a thread past ``--timeout`` while the worker drains), when the
   parent ignores it.
   :attr:`Report.FIRST_REQUEST`, once, as its first request starts (before the app
   runs it): from then on the parent does not count its death towards a crash loop (the
   app starts and serves; a request killed it: a crash in C, the OOM killer).
3. :attr:`Report.STOPPING` when it begins a stop, graceful or fast; it exits after it.
4. :attr:`Report.VETO` instead, when its app's ``stop()`` hook refused a SIGTERM stop:
   it keeps serving, and a later SIGTERM asks the hook again.

Its exit code: 0 after a stop it was asked for; :attr:`ExitCode.USAGE` when the app could
not be imported; :attr:`ExitCode.BOOT_FAILED` when the app could not start (the ASGI
lifespan startup failed, the ``start()`` hook raised); a ``start()`` hook's own non-zero
value; 1 after an uncaught exception. The parent reports a worker killed by signal N as
128 + N, as shells do.
"""

from __future__ import annotations

import enum
import signal

#: The signal that retires a worker: a graceful stop that no ``stop()`` hook is asked about.
RETIRE_SIGNAL = signal.SIGUSR2

#: The signal that makes a worker dump its threads' stacks (faulthandler); None where
#: the system has neither real-time signals nor SIGINFO. Not SIGRTMIN itself: the lowest
#: real-time signals are the ones libraries pick first (POSIX timers).
STACK_SIGNAL: int | None = (signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN")
                            else getattr(signal, "SIGINFO", None))


class Report(bytes, enum.Enum):
    """A status byte a worker writes to its parent's pipe."""

    READY = b"1"
    REPLACE_ME = b"R"
    FIRST_REQUEST = b"Q"
    STOPPING = b"S"
    VETO = b"V"


class ExitCode(enum.IntEnum):
    """The exit codes of a worker, and of the server, that mean something to the other side."""

    OK = 0
    #: An uncaught exception in the worker.
    CRASHED = 1
    #: The app could not be imported (the same code as a command-line usage error).
    USAGE = 2
    #: The app could not start; for the server: no worker ever started, or they keep dying.
    BOOT_FAILED = 3
