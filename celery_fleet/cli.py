"""`fleet`: the project's command line.

    fleet plan --ram-mb N --cores N [--gpu VRAM_MB]... [--set KEY=VALUE]... [--json]
    fleet plan inventory/X.py [--json]
    fleet status inventory/X.py [--json] [--watch SECONDS]
    fleet tune inventory/X.py [--window SECONDS] [--dry]
    fleet bench [--quick] [--cases light,heavy,limited,inference]
    fleet lab up [--hosts SPEC] [--suite bookworm|trixie] | down | status | ssh NAME [COMMAND...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .lab import (DEFAULT_HOSTS_SPEC, DEFAULT_INSTANCE, Lab, LabError, SpecError, exec_ssh,
                  parse_hosts)
from .lab.image import DEFAULT_SUITE, SUITES
from .layout import MODEL_DIGEST_CACHE
from .model_file import controller_facts
from .planview import format_plan
from .settings import SettingsError, parse_cli_value
from .sizing import ALL_ROLES, Gpu, HostFacts, plan_host


def _print_plans(plans, as_json: bool) -> None:
    if as_json:
        print(json.dumps(plans[0].to_json() if len(plans) == 1 else
                         {p.host: p.to_json() for p in plans}, indent=2))
    else:
        print("\n\n".join(format_plan(p) for p in plans))


def plan_command(args) -> int:
    if args.inventory:
        from .fleet import FleetError
        from .inventory_facts import plan_from_inventory  # imports pyinfra: only when needed
        try:
            plans, unreachable, retired = plan_from_inventory(args.inventory)
        except FleetError as error:
            print(f"fleet: {error}", file=sys.stderr)
            return 2
        if plans:
            _print_plans(plans, args.json)
        if retired and not args.json:
            print("\n" + "\n".join(f"{name}: retired: the deploy removes every unit, file and "
                                   "user of celery-fleet from it" for name in retired))
        for name in unreachable:
            print(f"fleet: host {name!r}: cannot be reached over SSH: not planned (its facts "
                  "are read on the host)", file=sys.stderr)
        return 2 if unreachable else 0
    if args.ram_mb is None or args.cores is None:
        raise SettingsError("(command line)", "--ram-mb/--cores", None,
                            "give both, or an inventory file")
    data = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SettingsError("(command line)", "--set", item, "KEY=VALUE")
        data[key] = parse_cli_value(key, value)
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    unknown = [r for r in roles if r not in ALL_ROLES]
    if unknown or not roles:
        raise SettingsError("(command line)", "--roles", args.roles,
                            f"a comma-separated list of {', '.join(ALL_ROLES)}")
    model = data.get("llm_model_path")
    # a model on this controller is looked at; one on a host cannot be without an inventory
    facts = HostFacts(args.ram_mb, args.cores,
                      tuple(Gpu(i, vram) for i, vram in enumerate(args.gpu)),
                      **(controller_facts(model, MODEL_DIGEST_CACHE)
                         if isinstance(model, str) and model else {}))
    plan = plan_host(args.name, facts, data, roles, embedding_hosts=args.embedding_hosts)
    _print_plans([plan], args.json)
    return 0


def status_command(args) -> int:
    from .status_probe import run  # imports pyinfra: only when needed
    if args.watch is not None and args.watch < 1:
        raise SettingsError("(command line)", "--watch", args.watch, "a number of seconds >= 1")
    from .fleet import FleetError
    try:
        return run(args.inventory, args.json, args.watch)
    except KeyboardInterrupt:  # the way out of --watch
        return 0
    except FleetError as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2


def tune_command(args) -> int:
    if args.window < 10:
        raise SettingsError("(command line)", "--window", args.window,
                            "a number of seconds >= 10")
    from .fleet import FleetError
    from .tune_probe import run  # imports pyinfra: only when needed
    try:
        return run(args.inventory, args.window, args.dry)
    except FleetError as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2


def _lab(args) -> Lab:
    return Lab(instance=args.instance, subnet=getattr(args, "subnet", None),
               suite=getattr(args, "suite", None))


def bench_command(args) -> int:
    from .bench.run import main as bench_main  # imports the worker app: only when needed
    return bench_main(args.out, args.quick, args.cases)


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

    plan = commands.add_parser("plan", help="the plan for a host described here, or for every "
                               "host of an inventory (from their real facts)")
    plan.add_argument("inventory", nargs="?", help="a pyinfra inventory file")
    plan.add_argument("--ram-mb", type=int, help="RAM of the host in MB")
    plan.add_argument("--cores", type=int, help="CPU cores of the host")
    plan.add_argument("--gpu", type=int, action="append", default=[], metavar="VRAM_MB",
                      help="one GPU with this much VRAM (repeat for more)")
    plan.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a setting, as in inventory host data (repeatable)")
    plan.add_argument("--roles", default=",".join(ALL_ROLES),
                      help="what the host runs (default: %(default)s)")
    plan.add_argument("--embedding-hosts", type=int, default=1,
                      help="embedding hosts sharing the API rate limit (default: 1)")
    plan.add_argument("--name", default="host", help=argparse.SUPPRESS)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=plan_command)

    status = commands.add_parser("status", help="what runs on every host of an inventory, "
                                 "against its plan: units, pools, tasks, queues, memory, GPUs "
                                 "(exit 1 on any difference, 2 when a host cannot be "
                                 "reached)")
    status.add_argument("inventory", help="a pyinfra inventory file")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", type=float, metavar="SECONDS",
                        help="read again every SECONDS, showing each worker's memory change "
                             "since the first reading (Ctrl-C stops)")
    status.set_defaults(func=status_command)

    tune = commands.add_parser("tune", help="measure the running fleet (CPU per task, the "
                               "endpoint's latency and capacity) and write it to group_data "
                               "beside the inventory, for the next deploy (docs/TUNING.md)")
    tune.add_argument("inventory", help="a pyinfra inventory file")
    tune.add_argument("--window", type=float, default=60,
                      help="seconds to watch the workers while tasks flow (default: 60)")
    tune.add_argument("--dry", action="store_true", help="measure and show; write nothing")
    tune.set_defaults(func=tune_command)

    bench = commands.add_parser("bench", help="sweep pools and concurrencies with real celery "
                                "workers against the fake backend on this machine")
    bench.add_argument("--out", default="bench-out", help="results.json and bench.png go here")
    bench.add_argument("--quick", action="store_true", help="half the tasks per configuration")
    bench.add_argument("--cases", default="all", help="comma-separated: light, heavy, limited, "
                       "inference, or all (default: %(default)s)")
    bench.set_defaults(func=bench_command)

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
    up.add_argument("--suite", default=None, choices=SUITES,
                    help=f"the hosts' Debian release (default: the running lab's, else "
                         f"{DEFAULT_SUITE})")
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
    except (LabError, SpecError, SettingsError) as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fleet status ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
