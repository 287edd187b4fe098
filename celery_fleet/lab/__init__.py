"""The lab: real systemd hosts (systemd-nspawn) on one Linux machine, for the demo and the
end-to-end tests. See docs/LAB.md."""

from .lab import DEFAULT_INSTANCE, DEFAULT_SUBNET, HostStatus, Lab, exec_ssh, lab_home
from .spec import DEFAULT_HOSTS_SPEC, HostSpec, SpecError, parse_hosts
from .system import LabError, LabUnavailable, why_unavailable

__all__ = [
    "DEFAULT_HOSTS_SPEC", "DEFAULT_INSTANCE", "DEFAULT_SUBNET", "HostSpec", "HostStatus", "Lab",
    "LabError", "LabUnavailable", "SpecError", "exec_ssh", "lab_home", "parse_hosts",
    "why_unavailable",
]
