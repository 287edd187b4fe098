"""The fleet's plan (celery_fleet/fleetplan.py, pure): every host's inventory values and facts
in, one PlannedHost each out, or every problem of every host at once."""

from celery_fleet.fleetplan import HostInput, plan_fleet
from celery_fleet.redis_state import password_digest
from celery_fleet.settings import SettingsError
from celery_fleet.sizing import Gpu, HostFacts

FACTS = HostFacts(8192, 2)
GENERATED = "generated-0123456789"


def host(name, roles, data=None, reached=True, redis_password=None):
    return HostInput(name, tuple(roles), data or {}, f"10.0.0.{len(name)}",
                     FACTS if reached else None,
                     password_digest(redis_password) if redis_password else None)


class FakeSecrets:
    """fleetplan.Secrets: sources are "src:<value>"; kept passwords live in a dict."""

    def __init__(self, kept=None):
        self.kept_passwords = dict(kept or {})
        self.asked = []

    def read(self, host, key, value):
        if value == "src:broken":
            raise SettingsError(host, key, value, "the source failed")
        return value.removeprefix("src:")

    def kept(self, settings, name, may_create):
        self.asked.append(name)
        if name not in self.kept_passwords and may_create:
            self.kept_passwords[name] = GENERATED
        return self.kept_passwords.get(name)


def test_every_host_is_planned_with_the_fleet_it_belongs_to():
    secrets = FakeSecrets()
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
    assert secrets.asked == ["broker.redis_password"]  # once; no Flower, no Flower password
    assert w1.visibility_timeout_s == max(4 * 300, 1800) + 60  # the longest wait, fleet-wide


def test_without_secrets_nothing_is_generated_and_a_set_password_is_used():
    planned, _ = plan_fleet([host("b", ["broker"]), host("w", ["llm"])])
    assert planned["w"].broker.password == ""  # fleet plan / fleet status generate nothing
    secrets = FakeSecrets()
    planned, _ = plan_fleet([host("b", ["broker"], {"redis_password": "set-by-you-0123456"})],
                            secrets=secrets)
    assert planned["b"].broker.password == "set-by-you-0123456" and secrets.asked == []


def test_a_new_password_is_only_made_for_a_broker_in_the_run_that_has_none():
    # --limit w (the broker left out), no password kept here: refused, nothing generated
    secrets = FakeSecrets()
    planned, errors = plan_fleet([host("b", ["broker"], reached=False), host("w", ["llm"])],
                                 secrets=secrets)
    assert planned == {} and secrets.kept_passwords == {}
    assert errors == [
        "host 'b': redis_password is not set and this controller keeps no generated password "
        "(.fleet-secrets/b.redis_password), while the broker is not part of this run (--limit, "
        "or unreachable): a new password would reach these workers but never Redis. Deploy "
        "with the broker in the run, or set redis_password to the broker's password "
        "(env:NAME, file:PATH or command:CMD)"]
    # the same run where this controller keeps the password: planned with it
    planned, errors = plan_fleet([host("b", ["broker"], reached=False), host("w", ["llm"])],
                                 secrets=FakeSecrets({"b.redis_password": "kept-0123456789abc"}))
    assert errors == [] and planned["w"].broker.password == "kept-0123456789abc"


def test_a_second_controller_never_replaces_the_password_the_broker_has():
    # another operator deployed the broker: its Redis requires a password this controller
    # does not keep
    secrets = FakeSecrets()
    fleet = [host("b", ["broker"], redis_password="theirs-0123456789ab"), host("w", ["llm"])]
    planned, errors = plan_fleet(fleet, secrets=secrets)
    assert planned == {} and secrets.kept_passwords == {}
    assert errors[0].startswith("host 'b': its Redis already requires a password this "
                                "controller does not keep (.fleet-secrets/b.redis_password)")
    # the team's password from its source: planned, the broker keeps its password
    planned, errors = plan_fleet([host("b", ["broker"], {"redis_password": "src:theirs-"
                                                         "0123456789ab"},
                                       redis_password="theirs-0123456789ab"),
                                  host("w", ["llm"])], secrets=secrets)
    assert errors == [] and planned["w"].broker.password == "theirs-0123456789ab"


def test_changing_the_password_needs_every_fleet_host_in_the_run():
    new = {"redis_password": "src:new-password-0123456"}
    fleet = [host("b", ["broker"], new, redis_password="old-password-0123456"),
             host("w1", ["llm"]), host("w2", ["embedding"], reached=False)]
    planned, errors = plan_fleet(fleet, secrets=FakeSecrets())
    assert planned == {} and errors == [
        "host 'b': this run would change the broker's Redis password, and w2 not part of it "
        "would lose Redis. Change it in a run that reaches every fleet host (no --limit), or "
        "set redis_password back to the password the broker has"]
    fleet[2] = host("w2", ["embedding"])
    planned, errors = plan_fleet(fleet, secrets=FakeSecrets())
    assert errors == [] and planned["w2"].broker.password == "new-password-0123456"


def test_api_keys_are_read_for_the_roles_that_use_them_and_their_errors_speak():
    secrets = FakeSecrets()
    keys = {"embedding_api_key": "src:emb-key", "llm_api_key": "src:llm-key"}
    planned, errors = plan_fleet([host("b", ["broker"], keys), host("e", ["embedding"], keys),
                                  host("l", ["llm"], keys)], secrets=secrets)
    assert errors == []
    assert (planned["e"].embedding_api_key, planned["e"].llm_api_key) == ("emb-key", "")
    assert (planned["l"].embedding_api_key, planned["l"].llm_api_key) == ("", "llm-key")
    assert planned["e"].settings["embedding_api_key"] == "src:emb-key"  # the inventory's
    _, errors = plan_fleet([host("b", ["broker"]), host("l", ["llm"], {"llm_api_key":
                                                                        "src:broken"})],
                           secrets=secrets)
    # "src:" is no source the settings know: masked like a key typed in
    assert errors == ["host 'l': llm_api_key=<hidden, 10 characters> is not accepted: the "
                      "source failed"]


def test_each_gpu_may_have_its_own_endpoint_one_url_per_gpu():
    gpu_host = HostInput("g", ("llm",), {"llm_gpu_api_urls": ["http://127.0.0.1:8001/v1"]},
                         "10.0.0.7", HostFacts(65536, 8, (Gpu(0, 24576), Gpu(1, 24576))))
    _, errors = plan_fleet([host("b", ["broker"]), gpu_host])
    assert errors == ["host 'g': llm_gpu_api_urls=['http://127.0.0.1:8001/v1'] is not accepted: "
                      "one URL per GPU the LLM worker uses (2 here: gpu0, gpu1), or []"]
    _, errors = plan_fleet([host("b", ["broker"]), host("c", ["llm"], {
        "llm_gpu_api_urls": ["http://127.0.0.1:8001/v1"]})])
    assert errors == ["host 'c': llm_gpu_api_urls=['http://127.0.0.1:8001/v1'] is not accepted: "
                      "one URL per GPU the LLM worker uses (0 here: none), or []"]


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


def test_a_retired_host_leaves_the_fleet_whole_and_never_with_the_queues():
    old = HostInput("old", (), {"service_user": "celery"}, "10.0.0.9", FACTS, retired=True)
    planned, errors = plan_fleet([host("b", ["broker"]), host("w", ["llm"]), old])
    assert errors == [] and sorted(planned) == ["b", "w"]
    assert "10.0.0.9" not in planned["b"].fleet_addresses  # the firewall forgets it
    both = HostInput("w2", ("llm",), {}, "10.0.0.8", FACTS, retired=True)
    broker = HostInput("old-broker", (), {"service_user": "root"}, "10.0.0.7", FACTS,
                       retired=True, runs_our_redis=True)
    _, errors = plan_fleet([host("b", ["broker"]), both, broker])
    assert errors == [
        "host 'w2' is in retired and in llm_workers: a host leaving the fleet is in no other "
        "group",
        "host 'old-broker': service_user='root' is not accepted: a system user name (a-z, 0-9, "
        "_, -; not root)",
        "host 'old-broker' runs the fleet's Redis: retiring it would lose every queued task. "
        "Move the broker first (another host in brokers, deploy, let this Redis drain: "
        "redis-cli LLEN on each queue), then remove Redis by hand (apt purge redis-server) and "
        "retire the host"]


# ---- broker: rabbitmq (issue #14) ---------------------------------------------------------

RABBIT = {"broker": "rabbitmq"}


def rabbit_fleet(brokers=3, data=None, secrets=None):
    hosts = [host(f"b{i}", ["broker"], {**RABBIT, "private_address": f"10.2.0.{i}",
                                        **(data or {})}) for i in range(1, brokers + 1)]
    hosts += [host("w1", ["embedding"], {**RABBIT, "private_address": "10.2.0.20"}),
              host("web", ["client"], {**RABBIT, "private_address": "10.2.0.30"})]
    return plan_fleet(hosts, secrets=secrets)


def test_a_rabbitmq_fleet_lists_every_broker_each_host_starting_at_its_own():
    secrets = FakeSecrets({"b1.rabbitmq_password": "rabbit-pass-0123456789",
                           "b1.erlang_cookie": "COOKIE0123456789"})
    planned, errors = rabbit_fleet(secrets=secrets)
    assert errors == []
    urls = {name: h.broker_url.split(";") for name, h in planned.items()}
    assert urls["web"] == [f"amqp://celery-fleet:rabbit-pass-0123456789@10.2.0.{i}:5672/"
                           "celery-fleet" for i in (2, 3, 1)]  # web: the 5th host by name
    assert {u[0] for u in urls.values()} == {f"amqp://celery-fleet:rabbit-pass-0123456789@"
                                             f"10.2.0.{i}:5672/celery-fleet" for i in (1, 2, 3)}
    # results (and the rate limit) stay in Redis, on the first broker only
    assert all(h.result_backend_url.endswith("@10.2.0.1:6379/0") for h in planned.values())
    assert [n for n, h in planned.items() if h.runs_redis] == ["b1"]
    assert planned["b2"].plan.redis is None and planned["b1"].plan.redis is not None
    assert planned["b2"].plan.rabbitmq.memory_watermark_mb == 8192 // 4
    assert planned["b1"].rabbitmq.nodes == ("rabbit@10.2.0.1", "rabbit@10.2.0.2",
                                            "rabbit@10.2.0.3")
    assert planned["b3"].rabbitmq.erlang_cookie == "COOKIE0123456789"
    # fleet plan / fleet status: no secret asked for, none in the plan
    planned, errors = rabbit_fleet()
    assert errors == [] and ":@10.2.0.1:5672" in planned["b1"].broker_url


def test_a_rabbitmq_cluster_is_1_3_5_or_7_brokers():
    assert rabbit_fleet(1)[1] == [] and rabbit_fleet(5)[1] == []
    errors = rabbit_fleet(2)[1]
    assert len(errors) == 1 and "1 host, or 3, 5 or 7 for a cluster" in errors[0]
    assert "it holds 2: b1, b2" in errors[0]


def test_one_broker_serves_the_whole_fleet():
    _, errors = plan_fleet([host("b", ["broker"], RABBIT), host("w", ["embedding"]),
                            host("x", ["llm"], {"broker": "redis"})])
    assert errors == ["broker differs between hosts (rabbitmq: b; redis: w, x): one broker "
                      "serves the whole fleet; set broker in the inventory's data for all "
                      "hosts"]


def test_a_rabbitmq_node_needs_an_address_erlang_accepts_as_a_long_name():
    _, errors = rabbit_fleet(1, {"private_address": "broker"})
    assert errors == ["host 'b1': private_address='broker' is not accepted: an IP address or "
                      "a fully qualified name: RabbitMQ's node is named after it "
                      "(rabbit@ADDRESS, Erlang long names)"]


def test_redis_fleets_are_unchanged_by_the_rabbitmq_fields():
    planned, _ = plan_fleet([host("b", ["broker"]), host("w", ["embedding"])],
                            secrets=FakeSecrets())
    assert planned["w"].rabbitmq is None and planned["w"].broker_url.startswith("redis://")
    assert planned["w"].result_backend_url == planned["w"].broker_url
    assert planned["b"].plan.rabbitmq is None


def test_a_retired_host_that_runs_rabbitmq_is_refused_with_the_way_out():
    old = HostInput("b3", (), {}, "10.0.0.9", FACTS, retired=True, runs_rabbitmq=True)
    _, errors = plan_fleet([host("b", ["broker"]), host("w", ["llm"]), old])
    assert len(errors) == 1 and errors[0].startswith("host 'b3' runs RabbitMQ: retiring")
    assert "rabbitmqctl forget_cluster_node" in errors[0]
