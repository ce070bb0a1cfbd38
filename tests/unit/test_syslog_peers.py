"""Finding the owner of a local syslog sender's socket in the kernel's /proc/net tables."""

import ipaddress

from agent.sources.syslog_peers import LocalSenders, socket_owners

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def row(local, remote, uid):
    return f"   0: {local} {remote} 01 00000000:00000000 00:00000000 00000000 {uid:>5}        0 1 1 0\n"


def tables(tmp_path, tcp=(), udp=(), udp6=()):
    for name, rows in (("tcp", tcp), ("udp", udp), ("udp6", udp6), ("tcp6", ())):
        (tmp_path / name).write_text(HEADER + "".join(rows))
    return str(tmp_path)


def test_tcp_sender_is_the_socket_connected_to_the_listener(tmp_path):
    # 127.0.0.1:40000 -> 127.0.0.1:5514 owned by 1000; our accepted end and an unrelated socket too.
    root = tables(tmp_path, tcp=[row("0100007F:9C40", "0100007F:158A", 1000),
                                 row("0100007F:158A", "0100007F:9C40", 0),
                                 row("0100007F:9C40", "0100007F:0050", 0)])
    assert socket_owners("tcp", LOOPBACK, 40000, (LOOPBACK, 5514), root=root) == {1000}


def test_udp_sender_may_be_an_unbound_socket_on_the_wildcard_address(tmp_path):
    root = tables(tmp_path, udp=[row("00000000:9C41", "00000000:0000", 0)],
                  udp6=[row("00000000000000000000000000000000:9C42", "00000000000000000000000000000000:0000", 33)])
    assert socket_owners("udp", LOOPBACK, 40001, root=root) == {0}
    assert socket_owners("udp", LOOPBACK, 40002, root=root) == {33}
    assert socket_owners("udp", LOOPBACK, 40003, root=root) == set()  # already closed


def test_local_sender_is_trusted_only_if_every_possible_owner_is(tmp_path, monkeypatch):
    root = tables(tmp_path, udp=[row("00000000:9C41", "00000000:0000", 0),
                                 row("0100007F:9C41", "00000000:0000", 1000),
                                 row("00000000:9C44", "00000000:0000", 0)])
    import agent.sources.syslog_peers as peers
    monkeypatch.setattr(peers, "socket_owners", lambda *a, **k: socket_owners(*a, **k, root=root))
    senders = LocalSenders([ipaddress.ip_address("192.0.2.2")], clock=lambda: 100.0)
    assert senders.is_local(LOOPBACK) and senders.is_local(ipaddress.ip_address("192.0.2.2"))
    assert not senders.is_local(ipaddress.ip_address("198.51.100.1"))
    assert senders.trusted("udp", (LOOPBACK, 40001)) is False  # root's and uid 1000's share the port
    assert senders.trusted("udp", (LOOPBACK, 40004)) is True
    assert senders.trusted("udp", (LOOPBACK, 40004)) is True and senders.lookups == 2  # remembered


def test_lookups_are_capped_per_second_and_beyond_the_cap_nothing_is_trusted(tmp_path, monkeypatch):
    import agent.sources.syslog_peers as peers
    monkeypatch.setattr(peers, "socket_owners", lambda *a, **k: {0})
    senders = LocalSenders([], clock=lambda: 100.0)
    answers = [senders.trusted("udp", (LOOPBACK, port)) for port in range(1000, 1000 + peers._LOOKUPS_PER_SECOND + 5)]
    assert answers.count(True) == peers._LOOKUPS_PER_SECOND and answers[-1] is False
