"""What a lab host looks like: name, simulated RAM, cores, GPUs and the fleet roles it plays.

Pure: parsing and validation only, no I/O, so `fleet lab up --hosts SPEC` can refuse a bad
spec before anything on the machine is touched.

Grammar (hosts separated by spaces or ';'):

    NAME:ram=SIZE,cores=N[,gpus=COUNTxSIZE][,roles=ROLE+ROLE][,nvidia_smi=ok|broken]

    broker:ram=8G,cores=2,roles=broker
    gpu-box:ram=16G,cores=2,gpus=1x24G,roles=llm
    big:ram=512G,cores=64,gpus=8x80G

SIZE is a number of MB, or a number followed by M or G (binary: 1G = 1024 MB).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..layout import GROUP_ROLES

# The fleet groups a lab host can belong to; inventory/lab.py turns them into pyinfra groups.
# role -> the inventory group that gives a host that role (the deploy's own mapping)
ROLE_GROUPS = {role: group for group, role in GROUP_ROLES.items()}
# A host that names no roles is a worker: it runs both kinds of worker.
DEFAULT_ROLES = ("embedding", "llm")

# The default lab of issue #2: a broker, a small CPU host and a GPU box; and the host of an
# application that submits tasks (issue #11), as an operator's web server would.
DEFAULT_HOSTS_SPEC = (
    "broker:ram=8G,cores=2,roles=broker "
    "cpu-small:ram=4G,cores=1,roles=embedding+llm "
    "gpu-box:ram=16G,cores=2,gpus=1x24G,roles=embedding+llm "
    "app:ram=1G,cores=1,roles=client"
)

# Host names become part of network-namespace and cgroup names and of /etc/hosts: keep them
# to what every one of those accepts (and what a DNS label accepts).
HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
MIN_RAM_MB = 512  # below this Debian + systemd + sshd do not boot reliably
MAX_HOSTS = 40  # host addresses are .11 to .50 of the lab's /24
FIRST_HOST_OCTET = 11
# "broken": the driver is not loaded (exit 9); "mismatch": driver/library version mismatch (exit 18)
NVIDIA_SMI_MODES = ("ok", "broken", "mismatch")
KNOWN_KEYS = ("ram", "cores", "gpus", "roles", "nvidia_smi")


class SpecError(ValueError):
    """A host spec that cannot describe a lab host; the message says what is accepted."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    ram_mb: int
    cores: int
    gpu_vram_mb: tuple[int, ...] = ()  # one entry per simulated GPU
    roles: tuple[str, ...] = DEFAULT_ROLES
    nvidia_smi: str = "ok"  # one of NVIDIA_SMI_MODES

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(ROLE_GROUPS[role] for role in self.roles)

    def describe(self) -> str:
        text = f"{format_mb(self.ram_mb)} RAM, {self.cores} core{'s' if self.cores != 1 else ''}"
        if self.gpu_vram_mb:
            text += f", {len(self.gpu_vram_mb)}x{format_mb(self.gpu_vram_mb[0])} GPU"
        if self.nvidia_smi != "ok":
            text += f" (nvidia-smi {self.nvidia_smi})"
        return text

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "ram_mb": self.ram_mb,
            "cores": self.cores,
            "gpu_vram_mb": list(self.gpu_vram_mb),
            "roles": list(self.roles),
            "nvidia_smi": self.nvidia_smi,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "HostSpec":
        return cls(
            name=data["name"],
            ram_mb=int(data["ram_mb"]),
            cores=int(data["cores"]),
            gpu_vram_mb=tuple(int(v) for v in data.get("gpu_vram_mb", ())),
            roles=tuple(data.get("roles", DEFAULT_ROLES)),
            nvidia_smi=data.get("nvidia_smi", "ok"),
        )


@dataclass(frozen=True)
class LabHost:
    """A host spec placed on the lab network."""

    spec: HostSpec
    ip: str
    veth: str  # the host side of its veth pair, on the lab bridge
    netns: str
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name


def parse_size_mb(text: str, *, what: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([MG]?)B?", text.strip(), flags=re.IGNORECASE)
    if not match:
        raise SpecError(f"{what}={text!r} is not a size: use MB as a number, or 512M, 4G, 1.5G")
    number, unit = float(match.group(1)), match.group(2).upper()
    mb = number * 1024 if unit == "G" else number
    return int(mb)


def format_mb(mb: int) -> str:
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


def parse_host(text: str) -> HostSpec:
    name, sep, rest = text.strip().partition(":")
    if not HOST_NAME_RE.match(name):
        raise SpecError(
            f"host name {name!r} in {text!r}: use 2-32 characters a-z, 0-9 and '-', "
            "starting with a letter"
        )
    if not sep or not rest:
        raise SpecError(f"host {name!r}: give at least ram and cores, e.g. {name}:ram=4G,cores=2")
    values: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in KNOWN_KEYS:
            raise SpecError(
                f"host {name!r}: {item!r} is not KEY=VALUE with KEY one of {', '.join(KNOWN_KEYS)}"
            )
        if key in values:
            raise SpecError(f"host {name!r}: {key} is given twice")
        values[key] = value.strip()
    for required in ("ram", "cores"):
        if required not in values:
            raise SpecError(f"host {name!r}: {required}= is required (e.g. ram=4G,cores=2)")

    ram_mb = parse_size_mb(values["ram"], what=f"host {name!r}: ram")
    if ram_mb < MIN_RAM_MB:
        raise SpecError(f"host {name!r}: ram={values['ram']} is below the {MIN_RAM_MB}M a host needs")
    if not values["cores"].isdigit() or int(values["cores"]) < 1:
        raise SpecError(f"host {name!r}: cores={values['cores']!r} must be a whole number >= 1")
    cores = int(values["cores"])

    gpus: tuple[int, ...] = ()
    if values.get("gpus", "0") != "0":
        match = re.fullmatch(r"(\d+)x(.+)", values["gpus"])
        if not match or int(match.group(1)) < 1:
            raise SpecError(
                f"host {name!r}: gpus={values['gpus']!r} must be COUNTxVRAM, e.g. 1x24G or 8x80G"
            )
        vram = parse_size_mb(match.group(2), what=f"host {name!r}: gpus VRAM")
        if vram < 1024:
            raise SpecError(f"host {name!r}: gpus={values['gpus']!r}: VRAM must be at least 1G")
        gpus = (vram,) * int(match.group(1))

    roles = DEFAULT_ROLES
    if "roles" in values:
        roles = tuple(r.strip() for r in values["roles"].split("+") if r.strip())
        unknown = [r for r in roles if r not in ROLE_GROUPS]
        if unknown or not roles:
            raise SpecError(
                f"host {name!r}: roles={values['roles']!r}: use one or more of "
                f"{', '.join(ROLE_GROUPS)} joined by '+'"
            )

    nvidia_smi = values.get("nvidia_smi", "ok")
    if nvidia_smi not in NVIDIA_SMI_MODES:
        raise SpecError(
            f"host {name!r}: nvidia_smi={nvidia_smi!r}: use one of {', '.join(NVIDIA_SMI_MODES)}"
        )
    return HostSpec(name, ram_mb, cores, gpus, roles, nvidia_smi)


def parse_hosts(text: str) -> tuple[HostSpec, ...]:
    items = [item for item in re.split(r"[;\s]+", text.strip()) if item]
    if not items:
        raise SpecError("no hosts given: e.g. --hosts 'web:ram=4G,cores=2'")
    specs = tuple(parse_host(item) for item in items)
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"host names must be unique: {', '.join(duplicates)} given more than once")
    if len(specs) > MAX_HOSTS:
        raise SpecError(f"{len(specs)} hosts given: the lab holds at most {MAX_HOSTS}")
    return specs


def place_hosts(specs: tuple[HostSpec, ...], subnet: str, instance: str) -> tuple[LabHost, ...]:
    """Give each host its address (.11, .12, ... in spec order) and interface names."""
    network = ipaddress.ip_network(subnet)
    return tuple(
        LabHost(
            spec=spec,
            ip=str(network.network_address + FIRST_HOST_OCTET + index),
            veth=f"fl{instance}-{index}",
            netns=f"fleet-{instance}-{spec.name}",
        )
        for index, spec in enumerate(specs)
    )
