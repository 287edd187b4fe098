"""The lab network: a bridge on the machine, one network namespace + veth per host, and a
masquerade rule so apt inside the hosts reaches the Debian archive.

Every name is derived from the lab instance, so `down` can find and remove all of it even when
the state file of a crashed run is gone.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from .system import LabError, run

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def bridge_name(instance: str) -> str:
    return f"fl{instance}-br"


def nft_table(instance: str) -> str:
    return f"celery_fleet_{instance}"


def link_names() -> set[str]:
    links = json.loads(run(["ip", "-j", "link", "show"]).stdout or "[]")
    return {link["ifname"] for link in links}


def netns_names() -> set[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return {ns["name"] for ns in json.loads(out)} if out else set()


def addresses_in_use() -> dict[str, str]:
    """Every IPv4 network configured on the machine, by interface."""
    out = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    return {
        f"{a['local']}/{a['prefixlen']}": link["ifname"]
        for link in out for a in link.get("addr_info", [])
    }


def check_subnet_free(subnet: str, bridge: str) -> None:
    network = ipaddress.ip_network(subnet)
    for address, ifname in addresses_in_use().items():
        if ifname != bridge and ipaddress.ip_interface(address).network.overlaps(network):
            raise LabError(
                f"the lab subnet {subnet} overlaps {address} on {ifname}: choose another with "
                "--subnet (a private /24 nothing else on this machine uses)"
            )


def gateway(subnet: str) -> ipaddress.IPv4Interface:
    network = ipaddress.ip_network(subnet)
    return ipaddress.ip_interface(f"{network.network_address + 1}/{network.prefixlen}")


def ensure_bridge(instance: str, subnet: str, saved_forward: Path) -> None:
    bridge = bridge_name(instance)
    if bridge not in link_names():
        check_subnet_free(subnet, bridge)
        run(["ip", "link", "add", bridge, "type", "bridge"])
        run(["ip", "addr", "add", str(gateway(subnet)), "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    # remember the machine's setting once, across instances, to restore it when the last goes
    if not saved_forward.exists():
        saved_forward.write_text(IP_FORWARD.read_text())
    IP_FORWARD.write_text("1\n")
    table = nft_table(instance)
    if run(["nft", "list", "table", "ip", table], check=False).returncode != 0:
        run(["nft", "-f", "-"], input=(
            f"table ip {table} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
            "  }\n"
            "}\n"
        ))


def add_host_link(instance: str, subnet: str, netns: str, veth: str, ip: str) -> None:
    """A fresh network namespace with eth0 = ip, and its peer veth on the lab bridge."""
    remove_host_link(netns, veth)
    prefix = ipaddress.ip_network(subnet).prefixlen
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", veth, "master", bridge_name(instance), "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", netns, "addr", "add", f"{ip}/{prefix}", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "route", "add", "default", "via", str(gateway(subnet).ip)])


def remove_host_link(netns: str, veth: str) -> None:
    # `ip netns add` over a stale name stacks nsfs mounts: delete until it is really gone
    for _ in range(10):
        if run(["ip", "netns", "del", netns], check=False).returncode != 0:
            break
    if veth in link_names():
        run(["ip", "link", "del", veth], check=False)


def remove_shared(instance: str) -> None:
    """Bridge and NAT table of an instance; idempotent."""
    bridge = bridge_name(instance)
    if bridge in link_names():
        run(["ip", "link", "del", bridge])
    run(["nft", "delete", "table", "ip", nft_table(instance)], check=False)


def any_lab_bridge() -> bool:
    return any(name.startswith("fl") and name.endswith("-br") for name in link_names())


def restore_ip_forward(saved_forward: Path) -> None:
    """Put ip_forward back as it was before the first lab, once no lab bridge remains."""
    if not saved_forward.exists() or any_lab_bridge():
        return
    IP_FORWARD.write_text(saved_forward.read_text())
    saved_forward.unlink()
