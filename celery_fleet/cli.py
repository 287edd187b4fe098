"""`fleet`: the project's command line.

    fleet lab up [--hosts SPEC] | down | status | ssh NAME [COMMAND...]
"""

from __future__ import annotations

import argparse
import os
import sys

from .lab import (DEFAULT_HOSTS_SPEC, DEFAULT_INSTANCE, Lab, LabError, SpecError, exec_ssh,
                  parse_hosts)


def _lab(args) -> Lab:
    return Lab(instance=args.instance, subnet=getattr(args, "subnet", None))


def lab_up(args) -> int:
    specs = parse_hosts(args.hosts)  # refuses a bad spec before anything is touched
    _lab(args).up(specs)
    return 0


def lab_down(args) -> int:
    _lab(args).down()
    return 0


def lab_status(args) -> int:
    lab = _lab(args)
    statuses = lab.status()
    if not statuses:
        print(f"lab {lab.instance!r} is not up (fleet lab up)")
        return 3
    print(f"{'HOST':<12} {'IP':<12} {'PROCESS':<8} {'SYSTEMD':<10} {'RAM':>7} {'CORES':>5} "
          f"{'GPU MiB':<10} PLANNED")
    for s in statuses:
        ram = f"{s.ram_mb}M" if s.ram_mb is not None else "-"
        cores = str(s.cores) if s.cores is not None else "-"
        print(f"{s.name:<12} {s.ip:<12} {s.process:<8} {s.system:<10} {ram:>7} {cores:>5} "
              f"{s.gpus or '-':<10} {s.spec.describe()}")
    return 0 if all(s.process == "running" and s.system == "running" for s in statuses) else 1


def lab_ssh(args) -> int:
    command, user = list(args.command), args.user
    if command[:1] == ["--user"] and len(command) > 1:  # `fleet lab ssh NAME --user deploy ...`
        user, command = command[1], command[2:]
    if command[:1] == ["--"]:
        command = command[1:]
    exec_ssh(_lab(args), args.name, user, command)
    return 0  # not reached: exec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    lab = commands.add_parser("lab", help="a local fleet of real systemd hosts (needs root)")
    lab.add_argument("--instance", default=os.environ.get("FLEET_LAB_INSTANCE", DEFAULT_INSTANCE),
                     help="run several labs side by side (default: %(default)s, "
                          "env FLEET_LAB_INSTANCE)")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True)
    up = lab_commands.add_parser("up", help="boot the lab's hosts (idempotent)")
    up.add_argument("--hosts", default=DEFAULT_HOSTS_SPEC, metavar="SPEC",
                    help="hosts as NAME:ram=SIZE,cores=N[,gpus=COUNTxSIZE][,roles=A+B]"
                         "[,nvidia_smi=ok|broken|mismatch], separated by spaces or ';' "
                         "(default: %(default)s)")
    up.add_argument("--subnet", default=None,
                    help="private /24 for the lab bridge (default: 10.77.0.0/24)")
    up.set_defaults(func=lab_up)
    lab_commands.add_parser("down", help="stop every host and remove all the lab made"
                            ).set_defaults(func=lab_down)
    lab_commands.add_parser("status", help="each host: running, systemd state, reported size"
                            ).set_defaults(func=lab_status)
    ssh = lab_commands.add_parser("ssh", help="open a shell (or run COMMAND) on a lab host")
    ssh.add_argument("name")
    ssh.add_argument("--user", default="root", help="root (default) or deploy")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=lab_ssh)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LabError, SpecError) as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
