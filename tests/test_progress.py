"""Long work shows progress (issue #6): the deploy, the bench sweep and the image build say
how far along they are."""

from celery_fleet.bench.run import (REPEATS, SWEEP_INFERENCE, Config, Result, median_run,
                                   past, progress, ranked, runs_planned, spread, sweep_configs)
from celery_fleet.lab.image import DebootstrapProgress, run_streaming
from celery_fleet.summary import progress_line


def test_a_deploy_says_each_tenth_of_its_operations_once():
    said, tenth = [], 0
    for done in range(1, 86):
        line = progress_line(done, 85, done * 0.5, tenth)
        if line:
            said.append(line)
            tenth = done * 10 // 85
    assert len(said) == 10
    assert said[0] == "--> celery-fleet: 10% (9 of 85 operations, 4 s)"
    assert said[-1] == "--> celery-fleet: 100% (85 of 85 operations, 42 s)"
    assert progress_line(3, 0, 1.0, 0) is None  # no operations: nothing to say


def test_the_bench_counts_its_runs_and_estimates_what_is_left():
    # each embedding workload: the sweep, its default and tuned plans and the shapes past
    # them, then five shapes (the plans, the best three) again until each ran REPEATS times
    per_workload = len(sweep_configs(2)) + 2 * 3 + 5 * (REPEATS - 1)
    assert runs_planned(["light", "heavy"], 2) == 2 * per_workload
    assert runs_planned(["inference"], 2) == len(SWEEP_INFERENCE) == 4
    assert progress(3, 21, 30.0) == "[3/21, 30 s, ~3 min left]"
    assert progress(20, 21, 60.0) == "[20/21, 60 s, ~3 s left]"


def test_the_image_build_says_each_debootstrap_stage_and_a_heartbeat():
    said, now = [], [0.0]
    progress_of = DebootstrapProgress(said.append, heartbeat_s=10, clock=lambda: now[0])
    for second, line in [(1, "I: Retrieving InRelease"), (2, "I: Retrieving libc6 2.36"),
                         (12, "I: Retrieving systemd 252"), (13, "W: a warning"),
                         (20, "I: Extracting base-files..."), (21, "I: Extracting bash...")]:
        now[0] = second
        progress_of.line(line)
    assert said == ["debootstrap, 1 s: Retrieving InRelease",
                    "debootstrap, 12 s: Retrieving systemd 252",  # heartbeat within the stage
                    "debootstrap, 20 s: Extracting base-files..."]  # a new stage


def test_streamed_output_arrives_line_by_line_and_keeps_the_exit_status():
    seen = []
    code, lines = run_streaming(["sh", "-c", "echo 'I: one'; echo 'I: two' >&2; exit 3"],
                                seen.append, timeout_s=30)
    assert code == 3 and seen == lines == ["I: one", "I: two"]


def test_the_bench_sweeps_past_every_plan_on_every_axis():
    for cores in (1, 2, 8):
        configs = sweep_configs(cores)
        assert max(c.concurrency for c in configs) >= 128
        assert {c.processes for c in configs} == {1, cores}
        assert {c.pool for c in configs} == {"gevent", "threads"}
    # wherever a plan lands, the sweep runs twice its slots and twice its processes
    assert past(Config("threads", 276, 2)) == [Config("threads", 552, 2),
                                               Config("threads", 276, 4)]
    assert Config("prefork", 1) in SWEEP_INFERENCE and max(c.concurrency
                                                            for c in SWEEP_INFERENCE) >= 8


def run(config: str, rate: float) -> Result:
    return Result("light", config, 100, 1.0, rate, 640.0, 60.0, 0)


def test_a_shape_counts_by_its_median_run_so_one_lucky_run_does_not_pick_the_best():
    lucky = [run("threads 64 x2", 700), run("threads 64 x2", 520), run("threads 64 x2", 540)]
    steady = [run("threads 256 x2", 600), run("threads 256 x2", 610), run("threads 256 x2", 590)]
    assert median_run(lucky).tasks_per_s == 540 and median_run(lucky).samples == (700, 520, 540)
    assert median_run(lucky[:2]).tasks_per_s == 520  # two runs: the lower
    runs = {Config("threads", 64, 2): lucky, Config("threads", 256, 2): steady,
            Config("gevent", 4): [run("gevent 4", 19)]}
    assert ranked(runs) == [Config("threads", 256, 2), Config("threads", 64, 2),
                            Config("gevent", 4)]
    assert spread(median_run(steady)) == "3: 590-610" and spread(run("gevent 4", 19)) == "1"
