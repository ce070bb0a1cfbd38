"""`jailwarden teardown`: what the agent made goes, through each backend's teardown, for the
configured jails and for jails only the store remembers; it refuses while the agent runs."""

import ipaddress
import io
import socket
import sqlite3

from agent.cli import main
from agent.teardown import teardown
from firewall.hostsdeny import HostsDenyBackend

ADDRESS = ipaddress.ip_address("192.0.2.7")


def write_config(tmp_path, jails: str) -> object:
    path = tmp_path / "jailwarden.toml"
    path.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\nsocket = "{tmp_path / "control.sock"}"\n'
                    f'backend = "hostsdeny"\n[firewall.hostsdeny]\npath = "{tmp_path / "hosts.deny"}"\n{jails}')
    return path


def test_teardown_removes_the_configured_and_the_remembered_jails_bans(tmp_path, capsys):
    deny = tmp_path / "hosts.deny"
    deny.write_text("ALL: PARANOID\n")
    for jail in ("sshd", "old"):
        backend = HostsDenyBackend(jail, path=deny)
        backend.setup()
        backend.ban(ADDRESS, 3600)
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state/jailwarden.db") as db:  # as the agent records a jail's backend
        db.execute("CREATE TABLE backends (jail TEXT PRIMARY KEY, backend TEXT NOT NULL, options TEXT NOT NULL)")
        db.execute("INSERT INTO backends VALUES ('old', 'hostsdeny', ?)", (f'{{"path": "{deny}"}}',))
    config = write_config(tmp_path, '[jails.sshd]\nfilter = "sshd"\n')
    assert main(["teardown", "--config", str(config)]) == 0
    assert deny.read_text() == "ALL: PARANOID\n"
    out = capsys.readouterr().out
    assert "jail sshd: firewall backend hostsdeny: removed" in out and "jail old: firewall backend hostsdeny" in out


def test_teardown_refuses_while_the_agent_answers(tmp_path):
    config = write_config(tmp_path, '[jails.sshd]\nfilter = "sshd"\n')
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "control.sock"))
        listener.listen()
        err = io.StringIO()
        assert teardown(config, io.StringIO(), err) == 1
    assert "the agent is running" in err.getvalue()


def test_version_is_printed(capsys):
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.startswith("jailwarden 0.")
