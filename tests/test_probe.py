"""The endpoint probe's verdict (pure): what two measurements of an endpoint say."""

import runpy

from celery_fleet import layout

verdict = runpy.run_path(str(layout.FILES_DIR / "fleet-probe"))["verdict"]


def run(concurrency, per_s, ok=20, rate_limited=0, failed=0):
    return {"concurrency": concurrency, "requests": ok + rate_limited + failed, "ok": ok,
            "rate_limited": rate_limited, "failed": failed, "per_s": per_s, "p50_ms": 200,
            "p95_ms": 250}


def test_an_endpoint_that_keeps_up_is_not_the_bottleneck():
    lines = verdict(run(1, 4.8), run(16, 70.0))
    assert lines[0] == "the endpoint serves about 14.6 requests at once (70.0 / 4.8 requests/s)"
    assert lines[1].startswith("it keeps up with 16 at once")


def test_a_single_slot_endpoint_is_named_as_the_bottleneck():
    assert "more concurrency will not help" in verdict(run(1, 4.8), run(16, 5.0))[1]


def test_429s_point_at_the_rate_limit_setting():
    assert "set embedding_rate_limit_per_min" in verdict(run(1, 4.8),
                                                         run(16, 40.0, rate_limited=12))[1]


def test_an_endpoint_that_does_not_answer_says_what_to_check():
    assert verdict(run(1, 0.0, ok=0, failed=20), run(16, 0.0, ok=0, failed=40)) == [
        "the endpoint did not answer (60 failed, 0 rate limited): check EMBEDDING_API_URL, "
        "the key, and that this host can reach it"]
