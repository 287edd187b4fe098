"""The Redis a broker host runs before this deploy, and whether its data needs a live switch
to AOF before our configuration takes over (pure: the fact's command and its parser).

Our redis.conf turns AOF on. Redis started with AOF on loads the AOF only: a Redis that kept
its data in dump.rdb (Debian's default: RDB, AOF off) would come back empty, every queued
task lost (redis/redis#12484). Redis's documented way (redis.conf, redis/redis#12506) is to
switch AOF on with CONFIG SET on the live server first; files/redis-aof-on does that.
"""

from __future__ import annotations

import hashlib

from .layout import REDIS_CONF, REDIS_UNIT

# The password Redis requires now travels only as a salted digest: enough to tell whether a
# deploy would change it (celery_fleet/fleetplan.py), useless in pyinfra's debug output.
DIGEST_SALT = "celery-fleet:"
OUR_MARK = "Rendered by celery-fleet"  # the first line of templates/redis.conf.j2

# Always exits 0; one KEY=value a line. The data file is looked up where the configuration
# puts it (dir, dbfilename), as Redis would.
REDIS_STATE_COMMAND = (
    f"conf={REDIS_CONF}; "
    'if [ ! -f "$conf" ]; then echo REDIS=absent; exit 0; fi; '
    f"if systemctl is-active --quiet {REDIS_UNIT}; then echo REDIS=running; "
    "else echo REDIS=stopped; fi; "
    f'if head -n 1 "$conf" | grep -q "{OUR_MARK}"; then echo OURS=yes; fi; '
    "last() { awk -v key=\"$1\" 'tolower($1) == key { v = $2 } END { print v }' \"$conf\" "
    "| tr -d \"\\\"'\"; }; "
    'echo "APPENDONLY=$(last appendonly)"; '
    "echo \"CONFIG_RENAMED=$(awk 'tolower($1) == \"rename-command\" && toupper($2) == "
    "\"CONFIG\" { r = \"yes\" } END { print r }' \"$conf\")\"; "
    'pw=$(last requirepass); if [ -n "$pw" ]; then '
    f'echo "PASSWORD_SHA256=$(printf \'{DIGEST_SALT}%s\' "$pw" | sha256sum | cut -d" " -f1)"; '
    'fi; '
    'dir=$(last dir); file=$(last dbfilename); '
    'echo "RDB_BYTES=$(stat -c %s "${dir:-/var/lib/redis}/${file:-dump.rdb}" 2>/dev/null '
    '|| echo 0)"'
)


def password_digest(password: str) -> str:
    """What REDIS_STATE_COMMAND prints for a Redis that requires this password."""
    return hashlib.sha256(f"{DIGEST_SALT}{password}".encode()).hexdigest()


def parse_redis_state(lines) -> dict:
    """-> {"installed", "running", "aof", "config_renamed": bool, "rdb_bytes": int,
    "password_digest": str or None (the password it requires now, as password_digest()),
    "ours": its configuration is celery-fleet's}."""
    values = dict(line.strip().split("=", 1) for line in lines if "=" in line)
    if values.get("REDIS", "absent") == "absent":
        return {"installed": False, "running": False, "aof": False, "config_renamed": False,
                "rdb_bytes": 0, "password_digest": None, "ours": False}
    rdb = values.get("RDB_BYTES", "0")
    return {"installed": True, "running": values.get("REDIS") == "running",
            "aof": values.get("APPENDONLY", "").lower() == "yes",
            "config_renamed": values.get("CONFIG_RENAMED") == "yes",
            "rdb_bytes": int(rdb) if rdb.isdigit() else 0,
            "password_digest": values.get("PASSWORD_SHA256") or None,
            "ours": values.get("OURS") == "yes"}


def needs_live_aof_switch(state: dict) -> bool:
    """A Redis whose configuration has AOF off, and that holds data (it runs, or it left a
    snapshot): switch it live before our configuration restarts it with AOF on."""
    return state["installed"] and not state["aof"] and (state["running"]
                                                        or state["rdb_bytes"] > 0)


def adoption_problem(host: str, state: dict) -> str | None:
    """A Redis that holds data with AOF off and cannot be switched live (its configuration
    renames CONFIG): refused before any host is changed, saying what to do."""
    if needs_live_aof_switch(state) and state["config_renamed"]:
        return (f"host {host!r}: its Redis keeps its data with AOF off, and its configuration "
                "renames CONFIG, so celery-fleet cannot switch AOF on live without losing the "
                "data (Redis would start from an empty AOF): run CONFIG SET appendonly yes "
                "(under its new name), wait until INFO persistence shows "
                "aof_rewrite_in_progress:0, set appendonly yes in its redis.conf, then deploy "
                "again")
    return None
