"""The endpoints applications report failures on: [agent] report_socket (a control socket taking
`report` only, for root and report_group, limited per peer uid) and report_http (agent/report_http.py,
limited per token), with their counts for `status`. One that cannot start is logged and the agent
runs without it."""

from __future__ import annotations

import grp
import logging
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.control import ControlServer, ControlSocketError
from agent.ratelimit import RateLimit
from agent.report_http import MIN_TOKEN, ReportHttpServer
from agent.secrets import SecretError, read_secret

if TYPE_CHECKING:
    from agent.commands import Commands

log = logging.getLogger("jailwarden")


class ReportEndpoints:
    def __init__(self, config: AgentConfig, commands: Commands) -> None:
        self._config = config
        self._commands = commands
        self.socket: ControlServer | None = None
        self.http: ReportHttpServer | None = None

    @property
    def running(self) -> bool:
        """Whether any endpoint takes reports (then jails can run with no log source)."""
        return self.socket is not None or self.http is not None

    async def start(self) -> None:
        await self._start_socket()
        await self._start_http()

    async def stop(self) -> None:
        for server in (self.socket, self.http):
            if server is not None:
                await server.stop()
        self.socket = self.http = None

    def stats(self) -> dict[str, dict[str, int]]:
        """Per running endpoint, since the start: reports accepted, and refused for the rate limit; on
        HTTP also requests refused for their token (auth_failed), and unchecked beyond the limit
        of those (auth_limited)."""
        servers = {"socket": self.socket, "http": self.http}
        return {name: dict(server.reports) for name, server in servers.items() if server is not None}

    def _rate_limit(self) -> RateLimit:
        return RateLimit(self._config.report_rate, self._config.report_burst)

    async def _start_socket(self) -> None:
        path, group = self._config.report_socket, self._config.report_group
        if path is None:
            return
        try:
            gid = grp.getgrnam(group).gr_gid if group is not None else None
        except KeyError:
            log.error("[agent] report_group %r: no such group; running without the report socket", group)
            return
        server = ControlServer(path, self._commands, commands=frozenset({"report"}), group=gid,
                               rate_limit=self._rate_limit())
        try:
            await server.start()
        except ControlSocketError as error:
            log.error("%s; running without the report socket", error)
            return
        self.socket = server

    async def _start_http(self) -> None:
        listen, token_file = self._config.report_http, self._config.report_token_file
        if listen is None:
            return
        try:
            token = read_secret(token_file, "[agent] report_token_file")
        except SecretError as error:
            log.error("%s; running without the HTTP report endpoint", error)
            return
        if len(token) < MIN_TOKEN:  # a short token is guessed, however slowly wrong ones are answered
            log.error("[agent] report_token_file %s holds a token of %d bytes, fewer than %d (`openssl rand -hex 32` "
                      "makes one of 64); running without the HTTP report endpoint", token_file, len(token), MIN_TOKEN)
            return
        server = ReportHttpServer(listen, self._commands.report, token, self._rate_limit())
        try:
            await server.start()
        except OSError as error:
            log.error("%s; running without the HTTP report endpoint", error.strerror)
            return
        self.http = server
