"""backend = "auto" against real kernels, each in a network namespace made for the test: no
nftables table -> ipset; a table of the host's firewall, or the agent's own from an earlier
run -> nftables. And the agent's start-up builds what was decided."""

from __future__ import annotations

import pytest

from .conftest import require_root, require_tools
from .netns import NetworkNamespace

DETECT = "import json\nfrom firewall.detect import detect_backend\nprint(json.dumps(detect_backend()))\n"
BUILD = """
import json, logging, pathlib, tempfile
logging.basicConfig(level=logging.INFO)
from agent.config import load_config
from agent.enforcement import backend_settings, build_backends
path = pathlib.Path(tempfile.mkdtemp()) / "jailwarden.toml"
path.write_text('[jails.sshd]\\nfilter = "sshd"\\n')
config = load_config(path)
backends, problems = build_backends(config, ["sshd"])
print(json.dumps([type(backends["sshd"]).__name__, backend_settings(config, "sshd")[0], problems]))
"""


@pytest.fixture
def ns(interpreter):
    require_root()
    require_tools("ip", "nft")
    with NetworkNamespace("jwauto", interpreter) as namespace:
        yield namespace


def test_auto_is_ipset_without_nftables_tables(ns):
    name, why = ns.python(DETECT)
    assert name == "ipset" and "no nftables table" in why


def test_auto_is_nftables_when_the_host_firewall_uses_nftables(ns):
    ns.run("nft", "add", "table", "inet", "filter")
    ns.run("nft", "add", "table", "ip", "nat")
    name, why = ns.python(DETECT)
    assert name == "nftables" and "inet filter" in why and "ip nat" in why


def test_auto_stays_nftables_once_the_agent_made_its_table(ns):
    ns.run("nft", "add", "table", "inet", "jailwarden")
    assert ns.python(DETECT)[0] == "nftables"


def test_start_up_builds_the_detected_backend_and_records_it_resolved(ns):
    assert ns.python(BUILD) == ["IpsetBackend", "ipset", []]
    ns.run("nft", "add", "table", "inet", "filter")
    result = ns.run_python(BUILD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == '["NftablesBackend", "nftables", []]'
    # Logged once, with the reason.
    assert result.stderr.count('backend = "auto": using nftables') == 1
