"""Where the lab cannot run, it refuses with the reason; tests that need it skip or fail."""

import pytest

from celery_fleet import cli
from celery_fleet.lab import pytest_plugin, system
from celery_fleet.lab.lab import Lab


def test_without_root_up_refuses_before_touching_anything(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("FLEET_LAB_HOME", str(tmp_path / "home"))
    assert cli.main(["lab", "up"]) == 2
    assert "the lab needs root" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_a_bad_host_spec_is_refused_before_touching_anything(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FLEET_LAB_HOME", str(tmp_path / "home"))
    assert cli.main(["lab", "up", "--hosts", "web:ram=4G,cores=0"]) == 2
    assert "cores='0' must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_a_bad_instance_name_is_refused():
    with pytest.raises(ValueError, match="lab instance 'My_Lab'"):
        Lab("My_Lab")


def test_tests_needing_the_lab_skip_with_the_reason(monkeypatch):
    monkeypatch.setattr(pytest_plugin, "why_unavailable", lambda: "the lab needs root")
    monkeypatch.delenv("FLEET_LAB_REQUIRED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="lab unavailable: the lab needs root"):
        pytest_plugin.require_lab()


def test_tests_needing_the_lab_fail_where_it_is_required(monkeypatch):
    monkeypatch.setattr(pytest_plugin, "why_unavailable", lambda: "the lab needs root")
    monkeypatch.setenv("FLEET_LAB_REQUIRED", "1")
    with pytest.raises(pytest.fail.Exception, match="required here .* the lab needs root"):
        pytest_plugin.require_lab()
