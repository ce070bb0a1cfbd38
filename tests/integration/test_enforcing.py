"""The agent without --dry-run: its bans reach the firewall backend and the store, end on time,
and a restart restores them from the store, puts back what the firewall lost, and takes over
what only the firewall holds, also after a kill -9, without banning anything twice. The
hostsdeny backend on a file of the test's, and nftables in a network namespace of the test's,
hold the bans; each kernel backend has its own tests."""

from __future__ import annotations

import time

from .agent import AgentProcess, journal_config
from .conftest import require_tools
from .netns import NetworkNamespace
from .polling import wait_until
from .test_firewall_nftables import elements
from .test_journal_source import APP_FILTER, fail


def test_bans_are_enforced_ended_and_restored_after_a_restart(journal_namespace, tmp_path):
    deny = tmp_path / "hosts.deny"
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2,
                            extra='backend = "hostsdeny"\nbantime = "3s"') + f"""
[firewall.hostsdeny]
path = "{deny}"
daemons = "sshd"
"""
    config = config.replace('bantime = "1h"\n', "")
    agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False)
    with agent:
        fail(journal_namespace, "203.0.113.60")
        fail(journal_namespace, "203.0.113.60")
        agent.wait_for(r"jail app: ban 203\.0\.113\.60 for 3s")
    assert "sshd: 203.0.113.60" in deny.read_text()
    with agent:
        agent.wait_for(r"jail app: 1 bans restored \(0 put back into the firewall\), 0 found in the firewall only")
        agent.wait_for(r"jail app: unban 203\.0\.113\.60 \(ban ended\)", timeout=10)
        assert agent.matching(r"ban 203\.0\.113\.60 for") == []
    assert "203.0.113.60" not in deny.read_text()


def test_a_kill_9_right_after_a_ban_keeps_it_in_the_kernel_and_bans_nothing_twice(journal_namespace, tmp_path):
    """The agent, with the nftables backend in a network namespace of the test's, is killed the
    moment the ban is in the kernel; the restarted agent has the ban (from the store or the
    kernel) and does not count the failures it reads again into a second ban."""
    require_tools("ip", "nft")
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2,
                            extra='backend = "nftables"\nbantime_increment = { factor = 2, max = "1w" }')
    with NetworkNamespace("jwagt") as ns:
        agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name)
        agent.start()
        fail(journal_namespace, "203.0.113.61")
        fail(journal_namespace, "203.0.113.61")
        agent.wait_for(r"jail app: ban 203\.0\.113\.61 for 1h")
        # The decision is logged before the backend call: give the kernel the ban, not the agent a save.
        wait_until(lambda: "203.0.113.61" in elements(ns, "app_v4"), "the ban in the kernel")
        agent.kill()
        assert 3590 <= elements(ns, "app_v4")["203.0.113.61"] <= 3600

        with agent:
            # Restored from the store if its write (within 50 ms of the decision) got in first,
            # else taken over from the kernel: either way one ban, with the kernel's time left.
            agent.wait_for(r"jail app: (1 bans restored \(0 put back|0 bans restored .* 1 found in the firewall only)")
            fail(journal_namespace, "203.0.113.62")
            fail(journal_namespace, "203.0.113.62")
            agent.wait_for(r"jail app: ban 203\.0\.113\.62 for 1h")  # everything before it was read by now
            assert agent.matching(r"ban 203\.0\.113\.61 for") == []
        held = elements(ns, "app_v4")
        assert set(held) == {"203.0.113.61", "203.0.113.62"} and held["203.0.113.61"] <= 3600


def test_a_ban_the_firewall_lost_while_the_agent_was_stopped_is_put_back(journal_namespace, tmp_path):
    require_tools("ip", "nft")
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2, extra='backend = "nftables"')
    with NetworkNamespace("jwagt") as ns:
        agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name)
        with agent:
            fail(journal_namespace, "203.0.113.63")
            fail(journal_namespace, "203.0.113.63")
            agent.wait_for(r"jail app: ban 203\.0\.113\.63 for 1h")
            wait_until(lambda: "203.0.113.63" in elements(ns, "app_v4"), "the ban in the kernel")
        assert "203.0.113.63" in elements(ns, "app_v4")  # a clean stop keeps bans in the kernel
        ns.run("nft", "flush set inet jailwarden app_v4")  # an administrator, or a reboot

        with agent:
            agent.wait_for(r"jail app: 1 bans restored \(1 put back into the firewall\)")
            wait_until(lambda: "203.0.113.63" in elements(ns, "app_v4"), "the ban back in the kernel")
            assert 3500 < elements(ns, "app_v4")["203.0.113.63"] <= 3600  # its time left, not a new hour
            assert agent.matching(r"ban 203\.0\.113\.63 for") == []


def test_bans_flushed_or_a_table_deleted_by_hand_while_running_are_put_back(journal_namespace, tmp_path):
    require_tools("ip", "nft")
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2, extra='backend = "nftables"')
    config = config.replace("[sources.journal]", 'reconcile_interval = "1s"\n[sources.journal]')
    with NetworkNamespace("jwagt") as ns:
        with AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name) as agent:
            fail(journal_namespace, "203.0.113.64")
            fail(journal_namespace, "203.0.113.64")
            wait_until(lambda: "203.0.113.64" in elements(ns, "app_v4"), "the ban in the kernel")

            ns.run("nft", "flush set inet jailwarden app_v4")
            wait_until(lambda: "203.0.113.64" in elements(ns, "app_v4"), "the ban put back after a flush")
            agent.wait_for(r"jail app: 1 bans were missing from the firewall .*putting them back")

            ns.run("nft", "delete table inet jailwarden")
            wait_until(lambda: "203.0.113.64" in elements(ns, "app_v4"), "the table rebuilt and the ban put back")
            agent.wait_for(r"jail app: firewall backend nftables works again")
            assert 3500 < elements(ns, "app_v4")["203.0.113.64"] <= 3600


def test_a_ban_that_ended_while_the_agent_was_stopped_is_lifted_and_the_next_one_is_longer(
        journal_namespace, tmp_path):
    """iptables keeps no expiry: the rule is still there at start, and must be lifted, not taken
    over; the failures that follow make a repeat offence."""
    require_tools("ip", "iptables-legacy")
    extra = 'backend = "iptables"\nbantime_increment = { factor = 2, max = "1w" }'
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2, extra=extra)
    config = config.replace('bantime = "1h"', 'bantime = "2s"')
    with NetworkNamespace("jwagt") as ns:
        agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name)
        with agent:
            fail(journal_namespace, "203.0.113.65")
            fail(journal_namespace, "203.0.113.65")
            agent.wait_for(r"jail app: ban 203\.0\.113\.65 for 2s \(offence 1")
            wait_until(lambda: "203.0.113.65" in ns.run("iptables-legacy", "-w", "-S", "jw-app").stdout, "the rule")
        time.sleep(2.5)  # time itself is what must pass: the ban ends while no agent runs
        assert "203.0.113.65" in ns.run("iptables-legacy", "-w", "-S", "jw-app").stdout

        with agent:
            agent.wait_for(r"jail app: unban 203\.0\.113\.65 \(ended while the agent was stopped\)")
            wait_until(lambda: "203.0.113.65" not in ns.run("iptables-legacy", "-w", "-S", "jw-app").stdout,
                       "the rule lifted")
            fail(journal_namespace, "203.0.113.65")
            fail(journal_namespace, "203.0.113.65")
            agent.wait_for(r"jail app: ban 203\.0\.113\.65 for 4s \(offence 2")


def test_a_reload_that_changes_a_jails_backend_moves_its_bans_and_a_removed_jail_lifts_them(
        journal_namespace, tmp_path):
    require_tools("ip", "nft", "iptables-legacy")
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2, extra='backend = "nftables"')
    with NetworkNamespace("jwagt") as ns:
        with AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name) as agent:
            fail(journal_namespace, "203.0.113.66")
            fail(journal_namespace, "203.0.113.66")
            wait_until(lambda: "203.0.113.66" in elements(ns, "app_v4"), "the ban in nftables")

            agent.config_path.write_text(config.replace('backend = "nftables"', 'backend = "iptables"'))
            reloaded = agent.cli("reload")
            assert reloaded.returncode == 0 and "firewall backend iptables set up anew" in reloaded.stdout
            wait_until(lambda: "-A jw-app -s 203.0.113.66/32 -j DROP" in ns.run("iptables-legacy", "-w", "-S").stdout,
                       "the ban moved into iptables")
            assert "jailwarden" not in ns.run("nft", "list", "tables").stdout  # the old backend's table is gone

            agent.config_path.write_text(config.replace("[jails.app]", "[jails.other]").replace(
                'backend = "nftables"', 'backend = "iptables"'))
            assert agent.cli("reload").returncode == 0
            wait_until(lambda: "jw-app" not in ns.run("iptables-legacy", "-w", "-S").stdout, "the jail's chain removed")


def test_a_backend_changed_or_a_jail_removed_while_the_agent_was_stopped_leaves_no_old_firewall_entries(
        journal_namespace, tmp_path):
    """iptables rules have no timeout: without the store remembering which backend a jail ran on,
    they would stay after the jail moved to nftables, or was removed, while the agent was stopped."""
    require_tools("ip", "nft", "iptables-legacy")
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2, extra='backend = "iptables"')
    with NetworkNamespace("jwagt") as ns:
        agent = AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name)
        with agent:
            fail(journal_namespace, "203.0.113.68")
            fail(journal_namespace, "203.0.113.68")
            wait_until(lambda: "-A jw-app -s 203.0.113.68/32 -j DROP" in ns.run("iptables-legacy", "-w", "-S").stdout,
                       "the ban in iptables")

        agent.config_path.write_text(config.replace('backend = "iptables"', 'backend = "nftables"'))
        with agent:
            agent.wait_for(r"jail app: its firewall backend changed while the agent was stopped \(was iptables.*"
                           r"what backend iptables made is removed")
            wait_until(lambda: "203.0.113.68" in elements(ns, "app_v4"), "the ban moved into nftables")
            assert "jw-app" not in ns.run("iptables-legacy", "-w", "-S").stdout

        agent.config_path.write_text(config.replace("[jails.app]", "[jails.other]").replace(
            'backend = "iptables"', 'backend = "nftables"'))
        with agent:
            agent.wait_for(r"jail app: it is no longer configured: what backend nftables made is removed")
            agent.wait_for(r"jail app is no longer configured: its 1 stored bans lifted")
            assert "app_v4" not in ns.run("nft", "list", "ruleset").stdout
        with agent:  # the dropped jail's state is gone from the store: nothing more to remove
            agent.wait_for("running")
            assert agent.matching("jail app") == []


def test_with_keep_bans_on_stop_false_a_clean_stop_lifts_the_bans(journal_namespace, tmp_path):
    require_tools("ip", "nft")
    config = journal_config(tmp_path, journal_namespace.name, "app", "app", 2, extra='backend = "nftables"')
    config = config.replace("[sources.journal]", "keep_bans_on_stop = false\n[sources.journal]")
    with NetworkNamespace("jwagt") as ns:
        with AgentProcess(tmp_path, config, {"app": APP_FILTER}, dry_run=False, netns=ns.name) as agent:
            fail(journal_namespace, "203.0.113.67")
            fail(journal_namespace, "203.0.113.67")
            wait_until(lambda: "203.0.113.67" in elements(ns, "app_v4"), "the ban in the kernel")
        assert agent.matching(r"jail app: firewall bans lifted at stop")
        assert "jailwarden" not in ns.run("nft", "list", "tables").stdout
