"""Secrets a team can share (issue #11, 4): a run that would hand workers a password the broker
never gets stops before any host is changed; a second controller deploys with the team's
password read from a source (here a command, as a password manager would be run) and changes
nothing."""

from .conftest import ROOT, deploy, lab_inventory_with, refused

WORKER_ENV = "/etc/celery-fleet/embedding-worker.env"
KEPT = ROOT / ".fleet-secrets" / "broker.redis_password"


def everywhere(lab, values: dict) -> dict:
    return {name: dict(values) for name in lab.names}


def env_file_sum(lab, host: str) -> str:
    return lab.ssh(host, f"sha256sum {WORKER_ENV}").stdout


def test_a_limited_run_without_the_broker_password_stops_before_any_change(lab, deployed,
                                                                           tmp_path):
    empty = tmp_path / "secrets-of-another-controller"
    inventory = lab_inventory_with(tmp_path, everywhere(lab, {"secrets_dir": str(empty)}))
    before = env_file_sum(lab, "cpu-small")
    output = refused(lab, inventory, "--limit", "cpu-small")
    assert ("host 'broker': redis_password is not set and this controller keeps no generated "
            f"password ({empty}/broker.redis_password), while the broker is not part of this "
            "run") in output
    assert not empty.exists()  # no password was made
    assert env_file_sum(lab, "cpu-small") == before


def test_a_second_controller_keeps_the_brokers_password(lab, deployed, tmp_path):
    empty = tmp_path / "secrets-of-another-controller"
    # the whole fleet in the run, but no kept password: a new one would lock every worker out
    output = refused(lab, lab_inventory_with(tmp_path, everywhere(lab, {
        "secrets_dir": str(empty)})))
    assert "host 'broker': its Redis already requires a password this controller does not " \
           "keep" in output
    assert not empty.exists()
    # the team's password manager, here a command printing the kept file
    result = deploy(lab, lab_inventory_with(tmp_path, everywhere(lab, {
        "secrets_dir": str(empty), "redis_password": f"command:cat {KEPT}"})))
    assert result["changed"] == 0, result["output"][-3000:]  # same password, nothing restarted
    assert KEPT.read_text().strip() not in result["output"]
