"""The optional Prometheus endpoint: `GET /metrics` on `[metrics] listen` (loopback by default
when set; off unless set), answered with the text exposition format from the agent's own
counters. A minimal HTTP/1.0 responder on the event loop, one request per connection; the text
format is a few lines per metric, so no client library is needed for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent.config_values import ListenAddress

log = logging.getLogger("jailwarden.metrics")

MAX_REQUEST = 8192  # bytes of request line and headers; Prometheus sends a few hundred
TIMEOUT = 5.0  # seconds a client may take to send its request
MAX_CONNECTIONS = 16  # beyond this, connections are closed at once: a local user cannot hold many


def exposition(status: dict) -> str:
    """The text format (version 0.0.4) of what `Commands.status()` returns."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP jailwarden_{name} {help_text}")
        out.append(f"# TYPE jailwarden_{name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
            number = _number(value)
            out.append(f"jailwarden_{name}{{{label_text}}} {number}" if label_text else f"jailwarden_{name} {number}")

    jails, sources = status["jails"], status["sources"]
    metric("uptime_seconds", "gauge", "Seconds since the agent started.", [({}, status["uptime"])])
    metric("dry_run", "gauge", "1 when the agent changes no firewall.", [({}, 1.0 if status["dry_run"] else 0.0)])
    metric("store_up", "gauge", "1 when the last write to the store succeeded.",
           [({}, 0.0 if status.get("store_error") else 1.0)])
    metric("failures_total", "counter", "Failures counted per jail since the agent started.",
           [({"jail": name}, jail["failures"]) for name, jail in jails.items()])
    metric("bans_total", "counter", "Bans decided per jail since the agent started.",
           [({"jail": name}, jail["bans"]) for name, jail in jails.items()])
    metric("active_bans", "gauge", "Bans in force per jail.",
           [({"jail": name}, jail["active_bans"]) for name, jail in jails.items()])
    metric("tracked_addresses", "gauge", "Addresses with failures counting towards a ban, per jail.",
           [({"jail": name}, jail["tracked"]) for name, jail in jails.items()])
    metric("lines_too_long_total", "counter", "Lines longer than the jail's filter searches (Fail2Ban filters: "
           "8 KiB), not examined.", [({"jail": name}, jail["lines_too_long"]) for name, jail in jails.items()])
    metric("backend_up", "gauge", "1 when the jail's firewall backend works, 0 while it fails.",
           [({"jail": name, "backend": jail["backend"]}, 1.0 if jail["backend_ok"] else 0.0)
            for name, jail in jails.items()])
    metric("source_events_total", "counter", "Log events delivered by each source.",
           [({"source": name}, source["events"]) for name, source in sources.items()])
    metric("source_dropped_total", "counter", "Messages a source dropped: the sum of source_dropped_by_reason_total.",
           [({"source": name}, source["dropped"]) for name, source in sources.items()])
    metric("source_dropped_by_reason_total", "counter", "The same drops by reason (syslog: not_allowed, queue_full, "
           "kernel: datagrams the kernel dropped on a full UDP receive buffer).",
           [({"source": name, "reason": key.removeprefix("dropped_")}, value) for name, source in sources.items()
            for key, value in source.get("counts", {}).items() if key.startswith("dropped_")])
    syslog = sources.get("syslog", {}).get("counts")
    if syslog is not None:
        metric("syslog_connections_total", "counter", "TCP connections to the syslog receiver: accepted, "
               "refused (max_connections were open), timed_out (no complete message in idle_timeout).",
               [({"outcome": outcome}, syslog.get(f"connections_{outcome}", 0))
                for outcome in ("accepted", "refused", "timed_out")])
        metric("syslog_connections_open", "gauge", "TCP connections to the syslog receiver open now.",
               [({}, syslog.get("connections_open", 0))])
    metric("source_lag_seconds", "gauge", "Seconds between the newest entry a source applied and now.",
           [({"source": name}, source["lag"]) for name, source in sources.items() if source["lag"] is not None])
    metric("reports_total", "counter", "Failures applications reported, per endpoint (socket, http): accepted, "
           "rate_limited; over HTTP also auth_failed (a wrong or missing token) and auth_limited (refused unchecked "
           "beyond the limit of failed authentications).", [({"channel": channel, "outcome": outcome}, count)
                                          for channel, counts in status.get("reports", {}).items()
                                          for outcome, count in counts.items()])
    actions = status.get("actions", {})
    metric("action_notices_total", "counter", "Ban and unban notices per action: queued, done, retried (a failed "
           "try, tried again), failed (given up), dropped (queue full).",
           [({"action": name, "outcome": outcome}, counts[outcome]) for name, counts in actions.items()
            for outcome in ("queued", "done", "retried", "failed", "dropped")])
    metric("action_waiting", "gauge", "Notices waiting in each action's queue.",
           [({"action": name}, counts["waiting"]) for name, counts in actions.items()])
    return "\n".join(out) + "\n"


def _number(value: float) -> str:
    """A sample's value in full: whole numbers as integers (`:g` wrote 1,007,003 as 1.007e+06,
    so a counter past a million lost its last digits), others as the shortest exact float."""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    def __init__(self, listen: ListenAddress, status: Callable[[], dict]) -> None:
        self.listen = listen
        self._status = status
        self._server: asyncio.AbstractServer | None = None
        self._connections = 0

    async def start(self) -> None:
        """Listen; OSError (address in use, not permitted) says where."""
        host = str(self.listen.host)
        try:
            self._server = await asyncio.start_server(self._serve, host, self.listen.port, limit=MAX_REQUEST)
        except OSError as error:
            raise OSError(error.errno, f"metrics: cannot listen on {host}:{self.listen.port}: "
                                       f"{error.strerror}") from None
        if not self.listen.host.is_loopback:
            log.warning("metrics: listening on %s, not loopback: anyone who reaches it sees the jails' counters",
                        host)
        log.info("metrics: serving http://%s:%d/metrics", host if self.listen.host.version == 4 else f"[{host}]",
                 self.listen.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""]
            if method not in ("GET", "HEAD"):
                await self._answer(writer, "405 Method Not Allowed", "only GET\n")
            elif path.split("?", 1)[0] != "/metrics":
                await self._answer(writer, "404 Not Found", "see /metrics\n")
            else:
                await self._answer(writer, "200 OK", exposition(self._status()), body=method == "GET",
                                   kind="text/plain; version=0.0.4; charset=utf-8")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # a client that went away or sent no complete request gets nothing
        except Exception:  # noqa: BLE001 - never let a scrape take the agent down
            log.exception("metrics: answering a request failed")
        finally:
            self._connections -= 1
            writer.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: str, text: str, body: bool = True,
                      kind: str = "text/plain; charset=utf-8") -> None:
        payload = text.encode()
        writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(payload)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + (payload if body else b""))
        await writer.drain()
