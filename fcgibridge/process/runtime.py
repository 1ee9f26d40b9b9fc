"""What every worker of one server shares, built once from the :class:`Config` before any
worker forks, and handed to each worker explicitly: the peer filter, the scoreboard, and
the observer (status and ping pages, access log) each worker makes from it."""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Config
from .accesslog import AccessLog, setup_access_logger
from .listeners import peer_allowed, web_server_addrs
from .scaling import most_workers
from .scoreboard import Scoreboard, for_workers
from .status import Observer


@dataclass
class Runtime:
    config: Config
    #: Which peers may connect: ``--allow-from``, else ``FCGI_WEB_SERVER_ADDRS``; None: any.
    allowed: Callable[[Any], bool] | None = None
    #: Shared by all workers (``--status-path``, ``--status-bind``, ``--pm`` dynamic or
    #: ondemand, ``--timeout``); None when nothing reads it.
    board: Scoreboard | None = None

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] = os.environ) -> Runtime:
        board = None
        if config.pm != "static":  # the scaler reads which workers are idle from it
            board = for_workers(max(config.workers, most_workers(config)))
        elif config.status_path or config.status_bind or config.timeout:  # --timeout: the hard kill reads it
            board = for_workers(config.workers)
        return cls(config, allowed_peers(config, environ), board)

    def observer(self, capacity: int) -> Observer | None:
        """This worker's observer (claiming its scoreboard slot), or None when status,
        ping and access log are all off and there is no scoreboard to write. Call it in the
        worker process."""
        config = self.config
        if not (config.status_path or config.ping_path or config.access_log or config.status_bind
                or self.board is not None):
            return None
        slot = self.board.claim() if self.board is not None else None
        access = None
        if config.access_log:
            access = AccessLog(config.access_log_format, setup_access_logger(config.access_log))
        return Observer(config, slot, self.board, access, 1 if config.sync else capacity)


def allowed_peers(config: Config, environ: Mapping[str, str]) -> Callable[[Any], bool] | None:
    """The peer filter: ``--allow-from`` CIDR ranges when given, else the addresses of
    ``FCGI_WEB_SERVER_ADDRS`` (the spec's variable), else None (anyone)."""
    if config.allow_from:
        networks: frozenset[Any] = frozenset(ipaddress.ip_network(item.strip(), strict=False)
                                             for item in config.allow_from)
        return functools.partial(peer_allowed, allowed=networks)
    addrs = web_server_addrs(environ)
    return None if addrs is None else functools.partial(peer_allowed, allowed=addrs)
