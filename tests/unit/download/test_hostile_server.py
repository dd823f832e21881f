"""The downloader against the sample server's hostile mode over many seeds (invariant 8): every
download returns an outcome (a cached file or a Failure), never raises, ends within the total
deadline, leaves no `.part` file, and a cached file is what it says (size, SHA-256) and, for a
clean response, what the server meant."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.failures import PERMANENT_CATEGORIES, TRANSIENT_CATEGORIES
from pipeline_lib.local.sample_server import _HOSTILE_FAULTS, hostile_plan
from pipeline_lib.local.samples import sample_task

SEEDS = range(300)
TOTAL = 1.0
MARGIN = 0.75  # 16 downloads at once on a shared 2-core machine


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """One run over every seed, 16 at a time (the stage's concurrency), shared by the checks."""
    from pipeline_lib.config import load_settings
    from pipeline_lib.local.sample_server import SampleFileServer

    root = tmp_path_factory.mktemp("hostile")
    settings = load_settings(
        "local",
        overrides={
            "storage": {"root": str(root)},
            "url_policy": {"allow_private_addresses": False, "allowed_networks": ["127.0.0.1/32"]},
            "download": {
                "connect_timeout_seconds": 0.5,
                "read_timeout_seconds": 0.5,
                "total_timeout_seconds": TOTAL,
                "max_bytes": 1_000_000,
            },
        },
    )
    downloader = Downloader.from_settings(settings, breakers=BreakerRegistry(10**9, 60))
    with SampleFileServer() as server:

        def one(seed: int):
            url = server.url(f"h{seed}.pdf", mode="hostile", seed=seed)
            started = time.monotonic()
            try:
                outcome = downloader.download(sample_task(url, f"h{seed}.pdf"))
            except Exception as exc:  # noqa: BLE001 - the assertion below reports it
                return seed, exc, time.monotonic() - started
            return seed, outcome, time.monotonic() - started

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, SEEDS))
    return root, results


def test_every_download_returns_an_outcome_and_never_raises(outcomes):
    _, results = outcomes
    raised = [(seed, hostile_plan(seed).fault, repr(o)) for seed, o, _ in results if isinstance(o, Exception)]
    assert raised == []
    for _, outcome, _ in results:
        assert (outcome.cached is None) != (outcome.failure is None)
        if outcome.failure:
            assert outcome.failure.category in TRANSIENT_CATEGORIES | PERMANENT_CATEGORIES


def test_every_download_ends_within_the_total_deadline(outcomes):
    _, results = outcomes
    late = [(seed, hostile_plan(seed).fault, round(took, 2)) for seed, _, took in results if took > TOTAL + MARGIN]
    assert late == []


def test_no_part_file_is_left_behind(outcomes):
    root, _ = outcomes
    assert list(Path(root).rglob("*.part")) == []


def test_a_cached_file_is_what_it_reports_and_what_a_clean_server_meant(outcomes):
    _, results = outcomes
    cached = 0
    for seed, outcome, _ in results:
        if outcome.cached is None:
            continue
        cached += 1
        data = Path(unquote(urlsplit(outcome.cached.cache_uri).path)).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (outcome.cached.bytes, outcome.cached.sha256)
        intended = hostile_plan(seed, f"h{seed}.pdf").intended
        if intended is not None:
            assert data == intended, f"seed {seed}"
    assert cached >= 50  # the run is not all failures: clean responses still download


def test_the_seeds_cover_every_fault_and_many_outcomes(outcomes):
    _, results = outcomes
    faults = Counter(hostile_plan(seed).fault for seed in SEEDS)
    assert set(faults) == {f.__name__.removeprefix("_h_") for f in _HOSTILE_FAULTS}
    categories = {o.failure.category if o.failure else "cached" for _, o, _ in results}
    expected = {"cached", "timeout", "connection", "truncated", "http_transient", "http_permanent", "policy"}
    assert expected <= categories, categories


def test_a_plan_is_the_same_for_the_same_seed():
    for seed in (0, 1, 42, 299):
        assert hostile_plan(seed) == hostile_plan(seed)
    assert len({repr(hostile_plan(seed).pieces)[:2000] for seed in range(50)}) > 40


def test_slow_plans_stay_bounded():
    for seed in range(2000):
        plan = hostile_plan(seed)
        assert sum(delay for _, delay in plan.pieces) <= 1.6, (seed, plan.fault)
        assert sum(len(data) for data, _ in plan.pieces) <= 400_000, (seed, plan.fault)
