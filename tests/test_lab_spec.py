"""Host specs of `fleet lab up --hosts`: what is accepted, and how bad specs are refused."""

import pytest

from celery_fleet.lab.spec import (DEFAULT_HOSTS_SPEC, HostSpec, SpecError, parse_hosts,
                                   place_hosts)


def test_default_lab_is_the_three_hosts_of_the_issue_and_an_application_host():
    broker, small, gpu, app = parse_hosts(DEFAULT_HOSTS_SPEC)
    assert (app.name, app.groups) == ("app", ("celery_clients",))
    assert (broker.name, broker.ram_mb, broker.cores, broker.gpu_vram_mb) == ("broker", 8192, 2, ())
    assert broker.groups == ("brokers",)
    assert (small.name, small.ram_mb, small.cores) == ("cpu-small", 4096, 1)
    assert small.groups == ("embedding_workers", "llm_workers")
    assert (gpu.name, gpu.ram_mb, gpu.cores, gpu.gpu_vram_mb) == ("gpu-box", 16384, 2, (24576,))


@pytest.mark.parametrize("text, expected", [
    ("a1:ram=2048,cores=1", HostSpec("a1", 2048, 1)),
    ("big:ram=1024G,cores=128,gpus=8x80G",
     HostSpec("big", 1024 * 1024, 128, (80 * 1024,) * 8)),
    ("half:ram=1.5G,cores=2,gpus=0", HostSpec("half", 1536, 2)),
    ("w-2:ram=512M,cores=1,roles=llm", HostSpec("w-2", 512, 1, roles=("llm",))),
    ("bad-gpu:ram=4G,cores=2,gpus=1x16G,nvidia_smi=broken",
     HostSpec("bad-gpu", 4096, 2, (16384,), nvidia_smi="broken")),
])
def test_accepted_specs(text, expected):
    assert parse_hosts(text) == (expected,)


def test_hosts_separated_by_spaces_or_semicolons():
    names = [s.name for s in parse_hosts(" aa:ram=1G,cores=1; bb:ram=1G,cores=1\ncc:ram=1G,cores=1")]
    assert names == ["aa", "bb", "cc"]


@pytest.mark.parametrize("text, message", [
    ("", "no hosts given"),
    ("Web:ram=4G,cores=1", "host name 'Web'"),
    ("web", "give at least ram and cores"),
    ("web:ram=4G", "cores= is required"),
    ("web:ram=lots,cores=1", "ram='lots' is not a size"),
    ("web:ram=256M,cores=1", "below the 512M"),
    ("web:ram=4G,cores=0", "cores='0' must be a whole number >= 1"),
    ("web:ram=4G,cores=two", "cores='two'"),
    ("web:ram=4G,cores=1,gpus=24G", "gpus='24G' must be COUNTxVRAM"),
    ("web:ram=4G,cores=1,gpus=1x512M", "VRAM must be at least 1G"),
    ("web:ram=4G,cores=1,roles=db", "roles='db': use one or more of broker, embedding, llm"),
    ("web:ram=4G,cores=1,disk=10G", "'disk=10G' is not KEY=VALUE with KEY one of"),
    ("web:ram=4G,ram=2G,cores=1", "ram is given twice"),
    ("web:ram=4G,cores=1,nvidia_smi=flaky", "nvidia_smi='flaky': use one of ok, broken"),
    ("web:ram=4G,cores=1 web:ram=2G,cores=1", "web given more than once"),
])
def test_refused_specs_say_what_is_accepted(text, message):
    with pytest.raises(SpecError, match=None) as error:
        parse_hosts(text)
    assert message in str(error.value)


def test_too_many_hosts_are_refused():
    with pytest.raises(SpecError, match="at most 40"):
        parse_hosts(" ".join(f"h{i}:ram=1G,cores=1" for i in range(41)))


def test_placement_gives_addresses_and_short_unique_interface_names():
    specs = parse_hosts(" ".join(f"host-number-{i}:ram=1G,cores=1" for i in range(40)))
    hosts = place_hosts(specs, "10.77.0.0/24", "abcdefgh")
    assert hosts[0].ip == "10.77.0.11" and hosts[-1].ip == "10.77.0.50"
    assert all(len(h.veth) <= 15 for h in hosts)  # the kernel's limit for interface names
    assert len({h.veth for h in hosts}) == len({h.netns for h in hosts}) == 40
    # the instance is delimited, so "lab" and "lab1" never claim each other's interfaces
    assert place_hosts(specs, "10.77.0.0/24", "lab")[11].veth == "fllab-11"
    assert place_hosts(specs, "10.77.0.0/24", "lab1")[1].veth == "fllab1-1"


def test_spec_round_trips_through_the_state_file():
    for spec in parse_hosts(DEFAULT_HOSTS_SPEC):
        assert HostSpec.from_dict(spec.to_dict()) == spec


def test_a_hosts_apt_sources_name_its_own_release_on_this_machines_archive():
    from celery_fleet.lab.image import sources_for

    machine = ("Types: deb\nURIs: http://mirror.example/debian\n"
               "Suites: bookworm bookworm-updates\nComponents: main\n\n"
               "Types: deb\nURIs: http://mirror.example/debian-security\n"
               "Suites: bookworm-security\nComponents: main\n"
               "# bookworm in a comment stays\n")
    trixie = sources_for("trixie", machine, "bookworm")
    assert "Suites: trixie trixie-updates\n" in trixie
    assert "Suites: trixie-security\n" in trixie
    assert trixie.count("http://mirror.example/debian") == 2  # the same archive
    assert "# bookworm in a comment stays" in trixie
    assert sources_for("bookworm", machine, "bookworm") == machine


def test_the_lab_builds_only_the_supported_releases():
    from celery_fleet.lab import Lab

    with pytest.raises(SpecError, match="one of bookworm, trixie"):
        Lab("x", suite="sid")
    assert Lab("x", suite="trixie").image.key != Lab("x", suite="bookworm").image.key
