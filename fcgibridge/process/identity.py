"""The process itself: where it runs, with which environment and umask, under which name,
as which user, and the pid file that names it.

The order, as :func:`fcgibridge.process.run.run` follows it:

1. :func:`prepare`: ``--chdir`` (so a relative ``--env-file``, ``--pid``, ``-b unix:``
   path or APP is taken from there), ``--umask``, then ``--env-file`` and the ``-e``
   entries (``-e`` wins) into ``os.environ``: the hooks and the app see them.
2. :meth:`Identity.from_config` checks ``--user``/``--group`` and :meth:`PidFile.claim`
   the pid file before anything is bound, so a mistake or a server already running is
   one line, not a half-started server.
3. The sockets are bound (as root: a port below 1024, a socket file in ``/run``); a unix
   socket file is chowned to ``--user``/``--group`` unless ``--socket-owner`` and
   ``--socket-group`` say otherwise (:func:`socket_defaults`; PHP-FPM's ``listen.owner``
   defaults the same way); then the pid file is written.
4. The privilege drop, where a worker begins: under a supervisor the master stays root
   (it re-binds nothing, but it forks replacements, reopens the logs, removes the socket
   files and the pid file at exit) and each worker drops right after the fork, before
   the ``post_fork`` hook and before it loads the app (gunicorn's workers do the same).
   A single process drops itself once the sockets are bound, the pid file is written and
   the log files are open, just before it loads the app (with ``--preload`` the app was
   loaded as root, in the master, as with a supervisor). A single process that dropped
   may not be allowed to remove its pid file and socket files at exit: the next start
   replaces a pid file naming a dead process, and a stale socket file, anyway.
5. Before that drop, and in the master after each SIGUSR1 reopen, the log files the
   workers open by name are given to ``--user`` (:meth:`Identity.own_log_files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import logging
import os
import pwd
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, parse_socket_mode
from ..errors import UserError
from ..logs import open_append
from .contract import ExitCode
from .listeners import group_name, user_name
from .supervisor import SupervisorEvents, WorkerProcess

log = logging.getLogger("fcgibridge.server")


# ------------------------------------------------------------------ directory, umask, environment


def prepare(config: Config) -> None:
    """``--chdir``, ``--umask``, ``--env-file`` then ``-e``: before the hooks and the app load."""
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise UserError(f"--chdir {config.chdir}: {exc.strerror}") from None
    if config.umask:
        os.umask(parse_socket_mode(config.umask))
    if config.env_file:
        os.environ.update(read_env_file(config.env_file))
    for entry in config.env:
        name, _, value = entry.partition("=")
        if "\0" in value:  # a TOML string may hold one; the environment cannot
            raise UserError(f"-e {name}=...: the value holds a NUL character, which an environment variable cannot")
        os.environ[name] = value


_ENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")


def read_env_file(path: str) -> dict[str, str]:
    """``NAME=VALUE`` lines (an ``export`` before the name is allowed); blank lines and
    lines starting with ``#`` are skipped; a value in matching single or double quotes
    loses them and is otherwise taken as it is (no escapes, no ``$`` expansion). Any
    other line is a :class:`UserError` naming the file and the line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte order mark some editors write is not a name
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"--env-file {path}: {reason}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):  # numbered as an editor does (\r goes with strip)
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(line)
        if match is None:
            raise UserError(f"--env-file {path}, line {number}: expected NAME=VALUE, got {line!r}")
        if "\0" in line:
            raise UserError(f"--env-file {path}, line {number}: a NUL character, which an environment variable "
                            "cannot hold")
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


# ------------------------------------------------------------------ user and group


@dataclass(frozen=True)
class Identity:
    """Who the workers run as: ``--user`` and ``--group``, resolved once at startup."""

    uid: int
    gid: int
    #: The account name, for ``os.initgroups`` (None: a uid with no account, or --group alone).
    name: str | None
    #: Whether --user was given (the socket files are then chowned to it).
    has_user: bool

    @classmethod
    def from_config(cls, config: Config) -> Identity | None:
        """The identity to drop to; None when neither option is given, or when they name
        the user and group this process already has. A :class:`UserError` for an
        unknown user or group, and when a change needs root and this is not root."""
        if not config.user and not config.group:
            return None
        uid, name, primary = _user(config.user) if config.user else (os.geteuid(), None, None)
        if config.group:
            gid = _group(config.group)
        elif primary is not None:
            gid = primary
        else:  # --user alone, a uid with no account
            raise UserError(f"--user {config.user}: uid {uid} has no account here, so it has no group; "
                            "give one with --group")
        if (uid, gid) == (os.geteuid(), os.getegid()) and os.geteuid() != 0:
            return None  # already that user and group
        if os.geteuid() != 0:
            what = " ".join(f"{flag} {value}" for flag, value in (("--user", config.user), ("--group", config.group))
                            if value)
            raise UserError(f"{what} needs root to switch to (running as {user_name(os.geteuid())}); "
                            "start as root, or leave the option out")
        return cls(uid, gid, name, bool(config.user))

    def drop(self) -> None:
        """Become that user for good: supplementary groups first (the user's, from
        ``/etc/group``; just the group without an account name), then the group, then the
        user; that order, because once the uid is not root the others cannot change."""
        step = "set the supplementary groups"
        try:
            if self.name is not None:
                os.initgroups(self.name, self.gid)
            else:
                os.setgroups([self.gid])
            step = f"set the group to {self.gid}"
            os.setgid(self.gid)
            if self.has_user:
                step = f"set the user to {self.uid}"
                os.setuid(self.uid)
        except OSError as exc:  # root without CAP_SETUID/CAP_SETGID, or a uid a user namespace does not map
            raise UserError(f"cannot switch to {self.describe()} for --user/--group: could not {step}: "
                            f"{exc.strerror}") from None
        if self.has_user and (os.getuid(), os.geteuid()) != (self.uid, self.uid):  # setuid as root sets every uid
            raise UserError(f"cannot switch to {self.describe()} for --user: the uid is still {os.getuid()}")
        log.info("running as %s", self.describe())

    def describe(self) -> str:
        return f"{user_name(self.uid)}:{group_name(self.gid)}"

    def own_log_files(self, config: Config) -> None:
        """Make the log files a worker opens or reopens by path the workers' (gunicorn
        does the same): ``--access-log`` and ``--slowlog`` (opened in each worker, after
        the drop), ``--error-log`` and ``--log-config``'s files (reopened by the workers
        on SIGUSR1). Created when missing, so that a file the root master makes (the
        hard kill's slow-log line, a reopen after a rotation) is not root's only. Run as
        root before the first fork, and again after each reopen, before the workers reopen."""
        paths = [config.access_log if config.access_log != "-" else "", config.slowlog, config.error_log]
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            if isinstance(logger, logging.Logger):
                paths += [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]
        for path in dict.fromkeys(p for p in paths if p):
            try:
                fd = open_append(path)  # a symlink only when root made it
                try:
                    os.fchown(fd, self.uid if self.has_user else -1, self.gid)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise UserError(f"cannot give the log file {path} to {self.describe()}: {exc.strerror}") from None


#: The largest uid or gid (uid_t and gid_t are 32 bits; all ones means "unchanged").
_MAX_ID = 2**32 - 2


def _number(flag: str, text: str) -> int:
    if int(text) > _MAX_ID:
        raise UserError(f"{flag} {text}: not a {'uid' if flag == '--user' else 'gid'} (0 to {_MAX_ID})")
    return int(text)


def _user(text: str) -> tuple[int, str | None, int | None]:
    """(uid, account name, primary gid) of a user name or uid."""
    if text.isdigit():
        _number("--user", text)
    try:
        account = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        if text.isdigit():
            return int(text), None, None
        raise UserError(f"--user: no user named {text!r} on this system; give a user name or a uid") from None
    return account.pw_uid, account.pw_name, account.pw_gid


def _group(text: str) -> int:
    if text.isdigit():
        return _number("--group", text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise UserError(f"--group: no group named {text!r} on this system; give a group name or a gid") from None


def socket_defaults(config: Config, identity: Identity | None) -> Config:
    """*config* with ``--socket-owner``/``--socket-group`` defaulting to the workers'
    user and group: the unix socket files we make belong to whoever serves them."""
    if identity is None:
        return config
    owner = config.socket_owner or (str(identity.uid) if identity.has_user else "")
    group = config.socket_group or str(identity.gid)
    return dataclasses.replace(config, socket_owner=owner, socket_group=group)


# ------------------------------------------------------------------ pid file


class PidFile:
    """``--pid FILE``: the server's pid, for init scripts and ``kill $(cat FILE)``.

    :meth:`claim` refuses a file naming a live process (another server, most likely)
    and forgets one naming a dead process; :meth:`write` writes a temporary file in the
    same directory and renames it over, so a reader never sees it half written;
    :meth:`remove` removes it only while it still names this process.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()  # absolute: the app may chdir
        self.pid: int | None = None

    @classmethod
    def claim(cls, path: str) -> PidFile | None:
        if not path:
            return None
        pidfile = cls(path)
        other = pidfile.read()
        if other is not None and other != os.getpid() and alive(other):
            raise UserError(f"--pid {path}: already running as pid {other} (stop it first, or remove the file "
                            "if that process is not fcgibridge)")
        return pidfile

    def read(self) -> int | None:
        """The pid in the file; None when there is none (no file, or not a number)."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def write(self, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as exc:
            raise UserError(f"--pid {self.path}: cannot write there: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(f"{self.pid}\n")
            os.chmod(temp, 0o644)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def remove(self) -> None:
        if self.pid is None or self.read() != self.pid:
            return
        try:
            self.path.unlink()
        except OSError as exc:
            log.warning("could not remove the pid file %s: %s", self.path, exc.strerror)
        self.pid = None


def alive(pid: int) -> bool:
    """Whether a process *pid* exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# ------------------------------------------------------------------ process titles


def set_title(title: str) -> None:
    """The title ``ps`` and ``top`` show, when setproctitle is installed (else nothing)."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


def display_name(config: Config) -> str:
    """``--name``, or the APP argument."""
    return config.proc_name or config.app


class IdentityEvents(SupervisorEvents):
    """In each new worker, right after the fork: its title, then the privilege drop
    (listed before the hooks' events, so ``post_fork`` already runs as ``--user``)."""

    def __init__(self, config: Config, identity: Identity | None) -> None:
        self.name = display_name(config)
        self.identity = identity

    def child_started(self, worker: WorkerProcess) -> None:
        set_title(f"fcgibridge: worker {worker.number} {self.name}")
        if self.identity is not None:
            try:
                self.identity.drop()
            except UserError as exc:  # the worker must not go on as root; one line, as for a single process
                print(f"fcgibridge: error: {exc}", file=sys.stderr)
                raise SystemExit(ExitCode.USAGE) from None
