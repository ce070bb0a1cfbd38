"""Where the client writes text in the shipped filters' lines, and what each service does to
that text before it logs it.

Each filter's comment ("Address choice") names the text its service takes from the client;
this table points at that text in the sample lines, so the injection tests can replace it.
A field is found either by the filter's own named capture (`capture`) or by a regex each of
whose groups is one (`where`), tried on every failing line of the filter's sample log;
`only` narrows it to the lines of one shape. `render` is the service: it turns what a client
sends into what the log shows, or None where the service refuses the input, so the tests
never forge a line the service could not write:

- OpenSSH cuts a user name at its first ':' (auth2.c), prints at most 100 bytes of it (%.100s)
  and passes every message through strnvis(), which writes control and non-ASCII bytes as
  C-style or octal escapes; PAM modules get the cut name and log it raw (syslog(3)). Other
  client text (banner, certificate ID, disconnect reason) is taken at any length.
- nginx cuts the Basic credentials at the first ':' and writes the error log's fields raw;
  a request line or header cannot hold CR, LF or NUL. Its access log writes '"', '\\' and
  bytes outside printable ASCII as \\xHH. Apache's access log writes '"' and '\\' as \\" and
  \\\\ and other unprintable bytes as \\xhh; its error log escapes control characters.
  HAProxy writes '"' and unprintable bytes in captures and the request as #XX.
- Postfix writes unprintable characters as '?'; a HELO name is one word; a client name is
  a verified host name. Exim accepts only a domain or an address literal as HELO.
- Dovecot's login process writes the user name as sent, control characters as '?'; the
  passdb, PAM and the auth lines only ever see names made of auth_username_chars (default
  letters, digits and ".-_@").
- MySQL prints at most 48 bytes of a user name, PostgreSQL at most 63 (NAMEDATALEN).
- Logfmt (Grafana) quotes a value holding a space, '=' or a quote; JSON (Nextcloud,
  PostgreSQL's jsonlog) escapes quotes, backslashes and control characters (PHP also '/').
- named writes a query name in presentation format: special characters and spaces escaped.
- vsftpd writes unprintable bytes as '?'; lighttpd escapes control characters.
- A protocol line (FTP, IMAP, SMTP, SIP) cannot hold CR or LF; C strings end at NUL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

Render = Callable[[str], "str | None"]


def as_sent(text: str) -> str:
    return text


def protocol_line(text: str) -> str | None:
    """Text a client sends inside one protocol line (a C string: NUL ends it)."""
    if "\r" in text or "\n" in text:
        return None
    return text.split("\x00", 1)[0]


def _vis(text: str) -> str:
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        char = chr(byte)
        if char == "\\":
            out.append("\\\\")
        elif char in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char])
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return "".join(out)


def _first_bytes(text: str, limit: int) -> str:
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def openssh_user(text: str) -> str:
    return _vis(_first_bytes(text.split("\x00", 1)[0].split(":", 1)[0], 100))


def openssh_text(text: str) -> str:
    return _vis(text.split("\x00", 1)[0])


def pam_user_from_sshd(text: str) -> str:
    return text.split("\x00", 1)[0].split(":", 1)[0]


def nginx_user(text: str) -> str:
    return text.split(":", 1)[0]


def _hex_escaped(text: str, escape: str, form: str) -> str:
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        char = chr(byte)
        out.append(form % byte if char in escape or not 0x20 <= byte < 0x7F else char)
    return "".join(out)


def nginx_access(text: str) -> str:
    return _hex_escaped(text, '"\\', "\\x%02X")


def apache_access(text: str) -> str:
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        char = chr(byte)
        out.append("\\" + char if char in '"\\' else char if 0x20 <= byte < 0x7F else f"\\x{byte:02x}")
    return "".join(out)


def control_escaped(text: str) -> str:
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


def haproxy(text: str) -> str:
    return _hex_escaped(text, '"#', "#%02X")


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def one_word(text: str) -> str | None:
    text = printable(text)
    return None if not text or any(c.isspace() for c in text) else text


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_ADDRESS_LITERAL = re.compile(r"\[(?:IPv6:)?[0-9A-Fa-f:.]+\]")


def host_name(text: str) -> str | None:
    return text if _HOST_NAME.fullmatch(text) else None


def exim_helo(text: str) -> str | None:
    return text if _HOST_NAME.fullmatch(text) or _ADDRESS_LITERAL.fullmatch(text) else None


def dovecot_login(text: str) -> str:
    return "".join("?" if ord(c) < 0x20 else c for c in text)


_DOVECOT_USERNAME = re.compile(r"[A-Za-z0-9.\-_@]*")


def dovecot_username(text: str) -> str | None:
    return text if _DOVECOT_USERNAME.fullmatch(text) else None


def mysql_user(text: str) -> str | None:
    line = protocol_line(text)
    return None if line is None else _first_bytes(line, 48)


def postgres_name(text: str) -> str:
    return _first_bytes(text.split("\x00", 1)[0], 63)


def postgres_json(text: str) -> str:
    return json.dumps(postgres_name(text), ensure_ascii=False)[1:-1]


def php_json(text: str) -> str:
    return json.dumps(text)[1:-1].replace("/", "\\/")


def logfmt(text: str) -> str:
    if text and not any(c in text for c in ' ="') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def dns_name(text: str) -> str:
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        char = chr(byte)
        if char in '"()[];\\@$':
            out.append("\\" + char)
        elif 0x21 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def vsftpd(text: str) -> str | None:
    line = protocol_line(text)
    return None if line is None else "".join(c if c.isprintable() else "?" for c in line)


@dataclass(frozen=True)
class AttackerField:
    """Client text in one filter's lines: a named capture, or each group of a regex."""

    name: str
    render: Render
    capture: str | None = None
    where: re.Pattern[str] | None = None
    only: re.Pattern[str] | None = None  # the lines (messages) it applies to; None: all


def _field(name: str, render: Render, *, capture: str | None = None, where: str | None = None,
           only: str | None = None) -> AttackerField:
    return AttackerField(name, render, capture, re.compile(where) if where else None,
                         re.compile(only) if only else None)


_NGINX_ERROR = [
    _field("request line", protocol_line, where=r', request: "([^"\r\n]*)"'),
    _field("Host header", protocol_line, where=r', host: "([^"\r\n]*)"'),
    _field("Referer", protocol_line, where=r', referrer: "([^"\r\n]*)"'),
]
_NGINX_ACCESS = [
    _field("remote user", nginx_access, where=r"^\S+ - (\S+) \[", only=r"^\S+ - \S+ \["),
    _field("request target", nginx_access, where=r'^[^"]*"[A-Z]+ ([^" ]*) HTTP/', only=r"^\S+ - \S+ \["),
    _field("Referer", nginx_access, where=r'^[^"]*"(?:[^"\\]|\\.)*" \d+ \S+ "((?:[^"\\]|\\.)*)"',
           only=r"^\S+ - \S+ \["),
    _field("User-Agent", nginx_access, where=r'^[^"]*"(?:[^"\\]|\\.)*" \d+ \S+ "(?:[^"\\]|\\.)*" "((?:[^"\\]|\\.)*)"',
           only=r"^\S+ - \S+ \["),
]
_APACHE_ERROR = [
    _field("URI", control_escaped, where=r"(?:not found|File does not exist|unable to stat|Password Mismatch"
                                         r"|password mismatch): (/\S*)"),
    _field("URI", control_escaped, where=r'authentication failure for "([^"]*)"'),
    _field("Referer", control_escaped, where=r", referer: (.*)$"),
    _field("URI", control_escaped, where=r"denied by server configuration: (.*)$"),
]
_APACHE_ACCESS = [
    _field("remote user", apache_access, where=r"^\S+ (?:\S+ )?- (\S+) \[", only=r"^\S+ (?:\S+ )?- \S+ \["),
    _field("request target", apache_access, where=r'^[^"]*"[A-Z]+ ((?:[^" \\]|\\.)*) HTTP/',
           only=r"^\S+ (?:\S+ )?- \S+ \["),
    _field("Referer", apache_access, where=r'^[^"]*"(?:[^"\\]|\\.)*" \d+ \S+ "((?:[^"\\]|\\.)*)"',
           only=r"^\S+ (?:\S+ )?- \S+ \["),
    _field("User-Agent", apache_access,
           where=r'^[^"]*"(?:[^"\\]|\\.)*" \d+ \S+ "(?:[^"\\]|\\.)*" "((?:[^"\\]|\\.)*)"',
           only=r"^\S+ (?:\S+ )?- \S+ \["),
]
_PAM_AFTER_SSHD = r"^pam_\w+\(sshd:"

FIELDS: dict[str, list[AttackerField]] = {
    "sshd": [
        _field("user", pam_user_from_sshd, capture="user", only=_PAM_AFTER_SSHD),
        _field("user", openssh_user, capture="user", only=r"^(?!pam_\w+\(sshd:)"),
        _field("client banner", openssh_text, where=r"^Bad protocol version identification '(.*)' from "),
        _field("certificate ID", openssh_text, where=r" ID (.*) \(serial \d+\) CA "),
        _field("disconnect reason", openssh_text, where=r" port \d+:\d+: (.*) \[preauth\]$"),
        _field("client's algorithms", openssh_text, where=r"Their offer: (.*?)(?: \[preauth\])?$"),
        _field("client version", openssh_text, where=r" vs\. (.*)$"),
        _field("new user", openssh_user, where=r" -> \(([^,]*),"),
        _field("new service", openssh_text, where=r" -> \([^,]*,(.*)\)(?: \[preauth\])?$"),
    ],
    "dovecot": [
        _field("user", dovecot_login, capture="user", only=r"-login: "),
        _field("user", dovecot_username, capture="user", only=r"^(?!.*-login: )"),
        _field("PAM user", dovecot_username, where=r"rhost=\S+\s+user=(\S*)"),
        _field("password", dovecot_login, where=r"given password: (.*)\)$"),
    ],
    "nginx-http-auth": [_field("user", nginx_user, capture="user"), *_NGINX_ERROR, *_NGINX_ACCESS],
    "nginx-limit-req": [*_NGINX_ERROR],
    "nginx-botsearch": [
        _field("path", protocol_line, capture="path", only=r"^\d{4}/"),
        _field("path", nginx_access, capture="path", only=r"^\S+ - \S+ \["),
        *_NGINX_ERROR, *_NGINX_ACCESS,
    ],
    "nginx-bad-request": [_field("request", nginx_access, capture="request"), *_NGINX_ACCESS],
    "apache-auth": [
        _field("user", control_escaped, capture="user"),
        _field("nonce", control_escaped, where=r"invalid nonce (\S*) received"),
        _field("realm", control_escaped, where=r"realm mismatch - got `(.*)' but expected"),
        *_APACHE_ERROR,
    ],
    "apache-badbots": [_field("agent", apache_access, capture="agent"), *_APACHE_ACCESS],
    "apache-botsearch": [_field("path", apache_access, capture="path", only=r"^\S+ (?:\S+ )?- \S+ \["),
                         _field("path", control_escaped, capture="path", only=r"^(?!\S+ (?:\S+ )?- \S+ \[)"),
                         *_APACHE_ERROR, *_APACHE_ACCESS],
    "apache-noscript": [_field("path", apache_access, capture="path", only=r"^\S+ (?:\S+ )?- \S+ \["),
                        _field("path", control_escaped, capture="path", only=r"^(?!\S+ (?:\S+ )?- \S+ \[)"),
                        _field("script", control_escaped, where=r"script '([^']*)' not found"),
                        *_APACHE_ERROR, *_APACHE_ACCESS],
    "apache-overflows": [
        _field("request line", control_escaped, where=r"(?:protocol string: |Invalid URI in request )(.*)$"),
        _field("header name", control_escaped, where=r"(?:LimitRequestFieldSize|after merging|separator): (.*)$"),
        _field("protocol", control_escaped, where=r"Unrecognized protocol '([^']*)'"),
    ],
    "haproxy-http-auth": [
        _field("request line", haproxy, where=r'"([^"]*)"$'),
        _field("captured headers", haproxy, where=r"\{([^}]*)\}"),
    ],
    "lighttpd-auth": [
        _field("user", control_escaped, capture="user"),
        _field("URI", control_escaped, where=r"doesn't match for (\S*) username: "),
        _field("URIs", control_escaped, where=r"uri mismatch \((.*) != (.*)\), IP: "),
    ],
    "postfix": [
        _field("client name", host_name, where=r" from ([^\s\[]+)\[[^\]]*\]"),
        _field("HELO", one_word, where=r"helo=<([^>]*)>$"),
        _field("sender", printable, where=r"from=<([^>]*)>"),
        _field("recipient", printable, where=r"to=<([^>]*)>"),
        _field("address in the reply", printable, where=r": \d{3} (?:\d\.\d+\.\d+ )?<([^>]*)>: "),
        _field("command", printable, where=r"^warning: non-SMTP command from \S+: (.*)$"),
        _field("pregreet", printable, where=r"PREGREET \d+ after \S+ from \S+: (.*)$"),
        _field("non-SMTP command", printable, where=r"NON-SMTP COMMAND from \S+ after \w+: (.*)$"),
        _field("pipelined commands", printable, where=r"PIPELINING from \S+ after \w+: (.*)$"),
    ],
    "postfix-sasl": [
        _field("client name", host_name, where=r" ([^\s\[]+)\[[^\]]*\]: SASL"),
        _field("SASL user name", printable, capture="user"),
    ],
    "exim": [
        _field("HELO", exim_helo, where=r"\(([^()\s]*)\) \["),
        _field("host name", host_name, where=r"(?:H=|failed for )([A-Za-z0-9][^\s(\[]*) [(\[]"),
        _field("set_id", protocol_line, capture="user"),
        _field("sender", protocol_line, where=r"F=<([^>]*)>"),
        _field("recipient", protocol_line, where=r"RCPT <([^>]*)>"),
        _field("EHLO argument", printable, where=r"invalid argument\(s\): (.*)$"),
        _field("input", printable, where=r' input="(.*)"$'),
        _field("command", printable, where=r'\(last was "(.*)"\)$'),
    ],
    "courier-auth": [_field("user", protocol_line, capture="user")],
    "courier-smtp": [
        _field("sender", protocol_line, where=r"from=<([^>]*)>"),
        _field("recipient", protocol_line, where=r"to=<([^>]*)>"),
        _field("command", protocol_line, where=r",cmd: (.*)$"),
    ],
    "qmail": [
        _field("helo", protocol_line, capture="helo"),
        _field("sender", protocol_line, where=r"from <([^:>]*)"),
        _field("recipient", protocol_line, where=r"rcpt <([^>]*)>"),
    ],
    "sendmail-auth": [
        _field("user", protocol_line, where=r"user=([^,]*), relay="),
        _field("client name", host_name, where=r"relay=(\S+) \["),
    ],
    "mysqld-auth": [_field("user", mysql_user, capture="user")],
    "postgresql-auth": [
        _field("user", postgres_name, capture="user", only=r"^(?!\{)"),
        _field("user", postgres_json, capture="user", only=r"^\{"),
        _field("user in the prefix", postgres_name, where=r"\[\d+\]:? ([^@\s]*)@\S* FATAL"),
        _field("database in the prefix", postgres_name, where=r"\[\d+\]:? [^@\s]*@(\S*) FATAL"),
        _field("database", postgres_name, where=r'database "([^"]*)"'),
        _field("database", postgres_json, where=r'"dbname":"((?:[^"\\]|\\.)*)"'),
    ],
    "gitea": [
        _field("user", protocol_line, capture="user"),
        _field("user in the error", protocol_line, where=r"name: ([^,\]]*)[,\]]"),
    ],
    "grafana": [_field("user", logfmt, where=r"uname=(\"(?:[^\"\\]|\\.)*\"|\S*)")],
    "nextcloud": [
        _field("user", php_json, capture="user", only=r"^\{"),
        _field("user", as_sent, capture="user", only=r"^\{core\}"),
        _field("URL", php_json, where=r'"url":"((?:[^"\\]|\\.)*)"'),
        _field("User-Agent", php_json, where=r'"userAgent":"((?:[^"\\]|\\.)*)"'),
    ],
    "asterisk": [
        _field("account", protocol_line, where=r'AccountID="([^",]*)"'),
        _field("session", protocol_line, where=r'SessionID="([^",]*)"'),
        _field("From", protocol_line, where=r"(?:Registration|Request '\w+') from '(.*)' failed for "),
        _field("caller", protocol_line, where=r"Call from '([^']*)' \("),
        _field("extension", protocol_line, where=r"to extension '([^']*)' rejected"),
        _field("call id", protocol_line, where=r"\(callid: ([^)]*)\)"),
        _field("user", protocol_line, where=r"authenticate as '(.*)'$"),
        _field("user", protocol_line, where=r"authentication for '([^']*)' \("),
    ],
    "named-refused": [
        _field("query name", dns_name, where=r"#\d+ \(([^)]*)\): "),
        _field("query name", dns_name, where=r"'([^/']*)/"),
    ],
    "openvpn": [_field("certificate subject", printable, where=r"CN=([^,]*)")],
    "proftpd": [
        _field("client name", one_word, where=r"^\S+ \((\S*)\[[^\]\s]*\]\) - "),
        _field("user", protocol_line, capture="user"),
    ],
    "pure-ftpd": [_field("user", protocol_line, capture="user")],
    "vsftpd": [
        _field("user", vsftpd, capture="user", only=r"\[pid \d+\] \["),
        _field("user", protocol_line, capture="user", only=r"^pam_"),
        _field("PAM user", protocol_line, where=r"^pam_.* rhost=\S*\s+user=(.*)$"),
        _field("PAM remote user", protocol_line, where=r"^pam_.* ruser=(\S*) rhost="),
    ],
    "recidive": [],  # jailwarden's own lines: nothing in them is the client's
}
