"""The fleet's plan (celery_fleet/fleetplan.py, pure): every host's inventory values and facts
in, one PlannedHost each out, or every problem of every host at once."""

from celery_fleet.fleetplan import HostInput, plan_fleet
from celery_fleet.sizing import HostFacts

FACTS = HostFacts(8192, 2)


def host(name, roles, data=None, reached=True):
    return HostInput(name, tuple(roles), data or {}, f"10.0.0.{len(name)}",
                     FACTS if reached else None)


def test_every_host_is_planned_with_the_fleet_it_belongs_to():
    asked = []

    def secrets(settings, name):
        asked.append(name)
        return "generated-0123456789"

    planned, errors = plan_fleet([
        host("broker", ["broker"], {"private_address": "10.1.0.1"}),
        host("w1", ["embedding", "llm"], {"private_address": "10.1.0.2"}),
        host("web", ["client"], {"private_address": "10.1.0.3"}),
        host("gone", ["embedding"], {"private_address": "10.1.0.4"}, reached=False),
        host("laptop", []),  # in no fleet group: not ours
    ], secrets=secrets)
    assert errors == []
    assert sorted(planned) == ["broker", "w1", "web"]  # not reached: not planned
    w1 = planned["w1"]
    assert w1.broker_url == "redis://:generated-0123456789@10.1.0.1:6379/0"
    # the broker admits every fleet host, reached or not, producers too
    assert w1.fleet_addresses == ("10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4")
    assert planned["web"].plan.embedding is None and planned["web"].plan.llm is None
    assert asked == ["broker.redis_password"]  # asked once; no Flower, no Flower password
    assert w1.visibility_timeout_s == max(4 * 300, 1800) + 60  # the longest wait, fleet-wide


def test_without_secrets_nothing_is_generated_and_a_set_password_is_used():
    planned, _ = plan_fleet([host("b", ["broker"]), host("w", ["llm"])])
    assert planned["w"].broker.password == ""  # fleet plan / fleet status generate nothing
    planned, _ = plan_fleet([host("b", ["broker"], {"redis_password": "set-by-you-0123456"})],
                            secrets=lambda s, n: "never")
    assert planned["b"].broker.password == "set-by-you-0123456"


def test_every_problem_of_every_host_is_reported_at_once():
    planned, errors = plan_fleet([
        host("b1", ["broker"]), host("b2", ["broker"]),
        host("w1", ["embedding"], {"embedding_concurrency": 0,
                                   "broker_allowed_networks": ["10.9.0.0/16"]}),
        host("w2", ["llm"], {"llm_pool": "threads"}),
    ])
    assert planned == {}
    assert errors[0].startswith("the brokers group must hold exactly one host")
    assert any("'w1': embedding_concurrency=0" in e for e in errors)
    assert any("'w1': broker_allowed_networks=['10.9.0.0/16'] is not accepted: [] here: set "
               "it on the broker host" in e for e in errors)
    assert any("'w2': llm_pool='threads'" in e for e in errors)


def test_controller_checks_speak_for_their_host():
    _, errors = plan_fleet([host("b", ["broker"]), host("w", ["llm"])],
                           controller_checks=lambda name, s, facts: [f"{name}: missing file"])
    assert errors == ["b: missing file", "w: missing file"]
