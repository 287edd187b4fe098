"""Run a pyinfra @deploy role for one fixture host, without the host (STYLE.md point 15).

Real: pyinfra's State, Inventory, Host, the @deploy/@operation wrappers and each operation's
own facts-to-commands logic, in API mode, as `pyinfra` prepares a deploy. Faked, and why:

* facts: `host.get_fact` answers from a mapping, so a test states the host it means. A fact
  the mapping lacks raises `UnknownFact` with its name and arguments, never a silent None.
* the connection: connect/run/upload raise; nothing runs here or over SSH.
* execution: each prepared op is then "executed" in order without running a command
  (pyinfra's own `_if` check, then `set_complete`), so `_if=any_changed(...)` resolves as
  in a real run: a restart runs only when what it restarts for changed.

Worlds: `FRESH` (bare Debian) and `converged(first_run)`, the facts after the first run's ops
were applied; a role is idempotent when a second run on those facts has no op that `changes`.
"""

from __future__ import annotations

import fnmatch
import inspect
import io
import posixpath
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.util import get_file_sha1, get_kwargs_str
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

from celery_fleet.facts import parse_worker_units
from celery_fleet.layout import REDIS_CONF, REDIS_UNIT

NOW = datetime(2025, 1, 1, 12, 0, 0)  # the fixture host's clock (server.Date, touched files)
BASE_DIRS = ("/", "/etc", "/etc/systemd/system", "/opt", "/tmp", "/usr/local/bin",
             "/usr/local/share/ca-certificates", "/var/lib/apt/periodic")


class UnknownFact(AssertionError):
    """A role asked for a fact the fixture does not define."""


@dataclass(frozen=True)
class Op:
    name: str  # the sentence given as name= (pyinfra's "module.op" when none)
    operation: str  # "files.template", "systemd.service", "worker_base.app_installed"...
    arguments: dict = field(repr=False)  # the operation's bound arguments, with defaults
    commands: tuple  # shell commands as str; uploads as (dest, text or bytes)
    conditional: bool  # _if= given
    changes: bool  # commands and (no _if, or its _if held when executed in order)


class Run(list):
    """The ops one role added for the host, in execution order; `.facts` lists the facts
    it asked for as "name(arguments)", first ask first."""

    facts: list[str]


def run_role(fn, *args, host_name="h", host_data=None, groups=(), facts=None, **kwargs) -> Run:
    """fn(*args, **kwargs), prepared by pyinfra for one host. `facts` (FRESH if None) maps a
    fact class or its name ("files.File") to its value, to a function of the fact's arguments
    (path=...), or to a dict keyed like pyinfra's fixtures ("path=/etc/x")."""
    facts = FRESH if facts is None else facts
    inventory = Inventory(([(host_name, dict(host_data or {}))], {}),
                          **{g: ([host_name], {}) for g in groups})
    state = State(inventory, Config(TEMP_DIR="/tmp"))  # else uploads ask server.TmpDir
    host = inventory.get_host(host_name)
    asked: list[str] = []
    host.get_fact = lambda cls, *a, **kw: _answer(facts, cls, a, kw, asked)
    for method in ("connect", "run_shell_command", "put_file", "get_file"):  # no I/O at all
        setattr(host, method, _refuse(method))
    run = Run()
    with ctx_state.use(state), ctx_inventory.use(inventory), ctx_config.use(state.config), \
            ctx_host.use(host):
        fn(*args, **kwargs)
        order = state.get_op_order()
        prepared = {h: list(state.ops[host][h].command_generator()) for h in order}
        state.is_executing = True  # pyinfra checks _if only while executing
        for op_hash in order:
            data = state.ops[host][op_hash]
            executed = list(data.command_generator())
            data.operation_meta.set_complete(True, executed, CommandOutput([]))
            run.append(_record(data, prepared[op_hash], bool(executed)))
    run.facts = list(dict.fromkeys(asked))
    return run


def _answer(facts, cls, args, kwargs, asked):
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}  # _sudo etc.
    if args or kwargs:
        bound = inspect.signature(cls().command).bind(*args, **kwargs)
        bound.apply_defaults()
        kwargs = dict(bound.arguments)
    label = f"{cls.name}({get_kwargs_str(kwargs)})"
    asked.append(label)
    entry = facts.get(cls, facts.get(cls.name, UnknownFact))
    if callable(entry) and entry is not UnknownFact:
        return entry(**kwargs)
    if entry is UnknownFact or kwargs and get_kwargs_str(kwargs) not in entry:
        raise UnknownFact(f"no fixture for the fact {label}")
    return entry[get_kwargs_str(kwargs)] if kwargs else entry


def _refuse(method):
    def refuse(*args, **kwargs):
        raise AssertionError(f"rolekit: the role called host.{method}; nothing may run")
    return refuse


def _record(data, commands, changes) -> Op:
    # pyinfra 3.10 keeps an op's function and arguments only in its command generator
    generator = data.command_generator
    cells = dict(zip(generator.__code__.co_freevars, (c.cell_contents for c in
                                                       generator.__closure__)))
    func = cells["func"]
    bound = inspect.signature(func).bind(*cells["args"], **cells["kwargs"])
    bound.apply_defaults()
    operation = f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"
    return Op(name=data.global_arguments.get("name") or operation, operation=operation,
              arguments=dict(bound.arguments), commands=tuple(_command(c) for c in commands),
              conditional=bool(data.global_arguments.get("_if")), changes=changes)


def _command(command):
    if isinstance(command, FileUploadCommand):  # what the host would receive
        src = command.src
        data = src.getvalue() if hasattr(src, "getvalue") else Path(src).read_bytes()
        if isinstance(data, bytes) and b"\0" not in data:
            data = data.decode()  # text, to read in a test; bytes stay bytes (a wheel)
        return command.dest, data
    if isinstance(command, FunctionCommand):
        return f"<python {command.function.__name__}>"
    assert isinstance(command, StringCommand), command
    return command.get_raw_value()


# The fixture worlds: a World holds what a host has, facts_of(world) answers from it


@dataclass
class World:
    """What the fixture host has: path -> {"mode", "user", "group", ...}, names, units."""

    files: dict = field(default_factory=dict)  # and "data": the bytes
    dirs: dict = field(default_factory=lambda: {d: _owned(755) for d in BASE_DIRS})
    packages: set = field(default_factory=set)
    users: dict = field(default_factory=lambda: {"root": _user("root", "/root", "/bin/bash")})
    groups: set = field(default_factory=lambda: {"root"})
    running: set = field(default_factory=set)
    enabled: set = field(default_factory=set)
    pip: dict = field(default_factory=dict)  # pip executable -> {package: [version]}

    def put(self, path, text, mode=None, user=None, group=None):
        self.mkdir(posixpath.dirname(path))
        data = text.encode() if isinstance(text, str) else text
        self.files[path] = {**_owned(mode or 644, user, group), "data": data}

    def mkdir(self, path, mode=None, user=None, group=None):
        if path and path not in self.dirs:
            self.mkdir(posixpath.dirname(path).rstrip("/") or "/")
        old = self.dirs.get(path, _owned(755))
        self.dirs[path] = _owned(mode or old["mode"], user or old["user"], group or old["group"])


def _owned(mode, user=None, group=None) -> dict:
    return {"mode": int(mode), "user": user or "root", "group": group or "root", "size": 0,
            "atime": NOW, "mtime": NOW, "ctime": NOW}


def _user(name, home, shell, group=None) -> dict:
    return {"home": home, "shell": shell, "group": group or name, "groups": [],
            "comment": None, "password": None, "uid": None, "gid": None}


def facts_of(w: World) -> dict:
    """The fact mapping a host in world w answers with (see `run_role`'s facts=)."""

    def file(path):
        return False if path in w.dirs else (
            {k: v for k, v in w.files[path].items() if k != "data"} if path in w.files else None)

    return {
        "files.File": file,
        "files.Directory": lambda path: False if path in w.files else w.dirs.get(path),
        "files.Link": lambda path: None,
        "files.Sha1File": lambda path: (get_file_sha1(io.BytesIO(w.files[path]["data"]))
                                        if path in w.files else None),
        "files.FileContents": lambda path: (w.files[path]["data"].decode("latin-1").splitlines()
                                            if path in w.files else None),
        "deb.DebPackages": {p: ["1.0"] for p in w.packages},
        "server.Users": w.users, "server.Groups": sorted(w.groups), "server.Os": "Linux",
        "server.Date": NOW,  # a later date makes apt.packages' cache_time run out
        "server.Which": lambda command: f"/usr/sbin/{command}",  # useradd and co.
        "systemd.SystemdStatus": lambda services, **_: {s: s in w.running for s in services},
        "systemd.SystemdEnabled": lambda services, **_: {s: s in w.enabled for s in services},
        # the project's one fact: instances of worker units loaded or enabled
        "celery_fleet.facts.WorkerUnits": lambda: parse_worker_units(w.running | w.enabled),
        "pip.PipPackages": lambda pip=None: w.pip.get(pip or "pip", {}),
        "celery_fleet.facts.RedisState": lambda: _redis_state(w),
        "files.FindFiles": lambda path, maxdepth=None, fname=None, **_: sorted(
            f for f in w.files if posixpath.dirname(f) == path.rstrip("/")
            and fnmatch.fnmatch(posixpath.basename(f), fname or "*")),
        # maxdepth 1, as the roles ask: the directory itself and the ones right below it
        "files.FindDirectories": lambda path, maxdepth=None, **_: sorted(
            d for d in w.dirs if d == path or posixpath.dirname(d) == path.rstrip("/")),
    }


def _redis_state(w: World) -> dict:
    """As celery_fleet.facts.RedisState reads it: from the configuration file and the unit."""
    conf = w.files.get(REDIS_CONF, {}).get("data", b"").decode()
    return {"installed": bool(conf), "running": REDIS_UNIT in w.running,
            "aof": "\nappendonly yes" in "\n" + conf, "rdb_bytes": 0,
            "config_renamed": "\nrename-command CONFIG" in "\n" + conf,
            "password_digest": None, "ours": conf.startswith("# Rendered by celery-fleet")}


FRESH = facts_of(World())  # a bare Debian host: base directories, root, nothing of ours


def converged(first_run: list[Op], world: World | None = None) -> dict:
    """The facts of a host (fresh, or world) after first_run's operations were applied."""
    w = world or World()
    for op in first_run:
        if op.conditional and not op.changes:
            continue  # its _if did not hold: it did nothing
        _apply(w, op.operation, op.arguments, op.commands)
    return facts_of(w)


def _apply(w: World, operation: str, a: dict, commands: tuple) -> None:
    if operation in ("files.put", "files.template"):
        for dest, text in (c for c in commands if isinstance(c, tuple)):
            w.put(dest, text, a["mode"], a["user"], a["group"])
    elif operation == "files.directory":
        if a["present"]:
            w.mkdir(a["path"], a["mode"], a["user"], a["group"])
        else:  # rm -rf: the directory and all below it
            below = a["path"].rstrip("/") + "/"
            for tree in (w.dirs, w.files):
                for path in [p for p in tree if p == a["path"] or p.startswith(below)]:
                    del tree[path]
    elif operation == "files.file":
        if a["present"]:
            w.put(a["path"], w.files.get(a["path"], {}).get("data", b""), a["mode"], a["user"],
                  a["group"])
        else:
            w.files.pop(a["path"], None)
    elif operation == "apt.packages":
        names = {re.split("[=<>]", p)[0] for p in a["packages"]}
        w.packages = w.packages | names if a["present"] else w.packages - names
    elif operation == "server.group":
        w.groups = w.groups | {a["group"]} if a["present"] else w.groups - {a["group"]}
    elif operation == "server.user" and a["present"]:
        w.users[a["user"]] = _user(a["user"], a["home"] or f"/home/{a['user']}", a["shell"],
                                   a["group"])
    elif operation == "server.user":
        w.users.pop(a["user"], None)
    elif operation == "pip.packages":
        installed = w.pip.setdefault(a["pip"] if not a["virtualenv"] else
                                     f"{a['virtualenv']}/bin/pip", {})
        for requirement in a["packages"]:
            name, _, version = requirement.partition("==")
            installed[re.split(r"[\[<>=;]", name)[0].lower()] = [version or "1.0"]
    elif operation in ("pip.venv", "pip.virtualenv") and a["present"]:
        w.put(f"{a['path']}/bin/activate", "# venv\n")
    elif operation == "systemd.service":
        name = a["service"] if "." in a["service"] else f"{a['service']}.service"
        for wanted, on in ((a["running"], w.running), (a["enabled"], w.enabled)):
            if wanted is not None:
                on.add(name) if wanted else on.discard(name)
    for command in (c for c in commands if isinstance(c, str)):  # shell: files it writes
        if m := re.search(r"apt-get install -y -q (\S+);", command):  # installed unstarted
            w.packages = w.packages | {m.group(1)}
        if m := re.fullmatch(r"mv (\S+) (\S+)", command):
            w.files[m.group(2)] = w.files.pop(m.group(1))
        if m := re.fullmatch(r"touch (\S+)", command):
            w.put(m.group(1), w.files.get(m.group(1), {}).get("data", b""))
        for text, path in re.findall(r"echo (\S+) > (\S+)$", command):
            w.put(path, text + "\n")
