"""Secrets a team can share (celery_fleet/secrets.py): read on the controller from the source an
inventory value names, checked like a value typed in, never printed."""

import stat
import sys

import pytest

from celery_fleet import layout
from celery_fleet.secrets import ControllerSecrets, read_or_create
from celery_fleet.settings import SettingsError, problems

PASSWORD = "team-Password_0123456789"


def refusal(reader, key, value) -> str:
    with pytest.raises(SettingsError) as caught:
        reader.read("broker-1", key, value)
    return str(caught.value)


def test_each_source_gives_the_secret(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD + "\nsecond line: not the password\n")
    reader = ControllerSecrets(environ={"FLEET_REDIS_PASSWORD": PASSWORD})
    assert reader.read("b", "redis_password", "env:FLEET_REDIS_PASSWORD") == PASSWORD
    assert reader.read("b", "redis_password", f"file:{tmp_path}/pw") == PASSWORD
    command = f"command:{sys.executable} -c 'print(\"{PASSWORD}\")'"
    assert reader.read("b", "redis_password", command) == PASSWORD
    assert reader.read("b", "embedding_api_key", "sk-typed-in") == "sk-typed-in"  # the value


def test_a_source_is_read_once_per_run(tmp_path):
    counter = tmp_path / "runs"
    script = tmp_path / "password-manager"
    script.write_text(f"#!/bin/sh\necho x >> {counter}\necho {PASSWORD}\n")
    script.chmod(0o755)
    reader = ControllerSecrets()
    for host in ("b", "w1", "w2"):
        assert reader.read(host, "llm_api_key", f"command:{script}") == PASSWORD
    assert counter.read_text() == "x\n"  # the password manager asked once, not per host


def test_a_failing_source_names_host_key_and_source_never_the_secret(tmp_path):
    reader = ControllerSecrets(environ={})
    assert refusal(reader, "redis_password", "env:FLEET_REDIS_PASSWORD") == (
        "host 'broker-1': redis_password='env:FLEET_REDIS_PASSWORD' is not accepted: the "
        "controller's environment has no FLEET_REDIS_PASSWORD (16 or more printable ASCII "
        "characters without blanks, quotes or backslashes, or env:NAME, file:PATH or "
        "command:CMD (read on the controller when deploying))")
    assert "cannot read /nonexistent/pw on the controller: No such file or directory" in \
        refusal(reader, "redis_password", "file:/nonexistent/pw")
    # a command that prints the secret and then fails: its stderr is shown, not its stdout
    leaky = f"command:sh -c 'echo {PASSWORD}; echo vault is locked >&2; exit 3'"
    message = refusal(reader, "embedding_api_key", leaky)
    assert "the command exited with 3: vault is locked" in message
    assert message.count(PASSWORD) == 1  # in the command line the inventory holds, only
    assert "the command did not run" in refusal(reader, "llm_api_key", "command:/nonexistent")


def test_what_a_source_gives_is_checked_like_a_typed_value_and_stays_hidden(tmp_path):
    (tmp_path / "pw").write_text("short\n")
    message = refusal(ControllerSecrets(), "redis_password", f"file:{tmp_path}/pw")
    assert message.startswith(f"host 'broker-1': redis_password='file:{tmp_path}/pw' is not "
                              "accepted: what it gives is refused: 16 or more")
    assert "short" not in message
    # a key typed into the inventory is masked when refused
    [found] = problems("w", {"embedding_api_key": "sk-with\ttab"})
    assert "sk-with" not in str(found) and "<hidden, 11 characters>" in str(found)


def test_a_kept_password_is_created_only_when_allowed_and_private(tmp_path):
    where = tmp_path / "secrets"
    assert read_or_create(str(where), "b.redis_password", may_create=False) is None
    assert not where.exists()  # nothing made
    made = read_or_create(str(where), "b.redis_password", may_create=True)
    assert len(made) >= 43
    assert stat.S_IMODE((where / "b.redis_password").stat().st_mode) == 0o600
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert read_or_create(str(where), "b.redis_password", may_create=False) == made


def test_a_password_with_url_characters_reaches_redis_quoted():
    from kombu.utils.url import url_to_parts

    url = layout.redis_url("p@ss/w#rd%?-0123456789", "10.0.0.5", 6379)
    assert url == "redis://:p%40ss%2Fw%23rd%25%3F-0123456789@10.0.0.5:6379/0"
    assert url_to_parts(url).password == "p@ss/w#rd%?-0123456789"  # what Celery connects with


def test_a_secret_made_by_another_controller_meanwhile_is_the_one_kept(tmp_path, monkeypatch):
    """Two deploys make the same secret at once (two controllers, both releases' test labs):
    the one that saw no file yet takes the other's instead of failing or writing its own."""
    (tmp_path / "broker.redis_password").write_text("made-by-the-other\n")
    real_exists = type(tmp_path).exists
    monkeypatch.setattr(type(tmp_path), "exists", lambda p: False if p.name ==
                        "broker.redis_password" else real_exists(p))  # it looked just before
    assert read_or_create(str(tmp_path), "broker.redis_password") == "made-by-the-other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broker.redis_password"]
