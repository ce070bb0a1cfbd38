"""Finding the owner of a local syslog sender's TCP socket in the kernel's /proc/net tables."""

import ipaddress

import agent.sources.syslog_peers as peers
from agent.sources.syslog_peers import LocalSenders, diag_owner, socket_owner, tcp_owner

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
LOOPBACK = ipaddress.ip_address("127.0.0.1")
LISTENER = (LOOPBACK, 5514)  # 0100007F:158A
V6_ZERO = "0000000000000000FFFF0000"  # ::ffff: in tcp6's word order


def row(local, remote, uid, state="01", inode=4242):
    return (f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 {uid:>5}        0 {inode} 1 "
            f"0000000000000000 20 4 30 10 -1\n")


def tables(tmp_path, tcp=(), tcp6=()):
    (tmp_path / "tcp").write_text(HEADER + "".join(tcp))
    (tmp_path / "tcp6").write_text(HEADER + "".join(tcp6))
    return str(tmp_path)


def test_the_open_socket_connected_to_the_listener_names_its_owner(tmp_path):
    # The peer 127.0.0.1:40000 owned by 1000; our accepted end, and another connection of that port.
    root = tables(tmp_path, tcp=[row("0100007F:9C40", "0100007F:0050", 0),
                                 row("0100007F:158A", "0100007F:9C40", 0),
                                 row("0100007F:9C40", "0100007F:158A", 1000)])
    assert tcp_owner((LOOPBACK, 40000), LISTENER, root=root) == 1000


def test_a_socket_closed_before_the_accept_names_nobody(tmp_path):
    # Orphaned ends (FIN_WAIT, TIME_WAIT) are listed with uid 0 and inode 0: not root's.
    root = tables(tmp_path, tcp=[row("0100007F:9C41", "0100007F:158A", 0, state="05", inode=0),
                                 row("0100007F:9C42", "0100007F:158A", 0, state="01", inode=0)])
    assert tcp_owner((LOOPBACK, 40001), LISTENER, root=root) is None
    assert tcp_owner((LOOPBACK, 40002), LISTENER, root=root) is None
    assert tcp_owner((LOOPBACK, 40003), LISTENER, root=root) is None


def test_a_v4_peer_of_a_v6_socket_is_found_in_tcp6(tmp_path):
    root = tables(tmp_path, tcp6=[row(f"{V6_ZERO}0100007F:9C43", f"{V6_ZERO}0100007F:158A", 0)])
    assert tcp_owner((LOOPBACK, 40003), LISTENER, root=root) == 0
    ipv6 = ipaddress.ip_address("::1")
    root = tables(tmp_path, tcp6=[row("00000000000000000000000001000000:9C44",
                                      "00000000000000000000000001000000:158A", 0)])
    assert tcp_owner((ipv6, 40004), (ipv6, 5514), root=root) == 0


def test_local_udp_is_never_trusted_and_tcp_only_for_trusted_uids(monkeypatch):
    owners = {40000: 0, 40001: 1000}
    monkeypatch.setattr(peers, "socket_owner", lambda peer, listener: owners.get(peer[1]))
    senders = LocalSenders([ipaddress.ip_address("192.0.2.2")], clock=lambda: 100.0)
    assert senders.is_local(LOOPBACK) and senders.is_local(ipaddress.ip_address("192.0.2.2"))
    assert not senders.is_local(ipaddress.ip_address("198.51.100.1"))
    assert senders.trusted("tcp", (LOOPBACK, 40000), LISTENER) is True
    assert senders.trusted("tcp", (LOOPBACK, 40001), LISTENER) is False
    assert senders.trusted("udp", (LOOPBACK, 40000), LISTENER) is False


def test_lookups_are_capped_per_second_and_beyond_the_cap_nothing_is_trusted(monkeypatch):
    monkeypatch.setattr(peers, "socket_owner", lambda peer, listener: 0)
    senders = LocalSenders([], clock=lambda: 100.0)
    answers = [senders.trusted("tcp", (LOOPBACK, port), LISTENER)
               for port in range(1000, 1000 + peers._LOOKUPS_PER_SECOND + 5)]
    assert answers.count(True) == peers._LOOKUPS_PER_SECOND and answers[-1] is False


def test_the_real_table_finds_this_process_as_the_owner_of_its_connection():
    import os
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            peer = (LOOPBACK, client.getsockname()[1])
            assert tcp_owner(peer, (LOOPBACK, server.getsockname()[1])) == os.geteuid()


def test_sock_diag_finds_the_owner_of_an_open_connection_and_nobody_once_it_is_closed():
    import os
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        listener = (LOOPBACK, server.getsockname()[1])
        peer = (LOOPBACK, client.getsockname()[1])
        with accepted:
            assert diag_owner(peer, listener) == os.geteuid() == socket_owner(peer, listener)
            client.close()
            assert diag_owner(peer, listener) is None
