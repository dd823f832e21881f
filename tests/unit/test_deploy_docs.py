"""docs/deploy.md stays true to the code: the event hubs to create are the config's topics with
their partition counts, and the runtime table names the versions CI checks (versions.RUNTIMES and
the Makefile's runtime venvs)."""

from __future__ import annotations

import re

from pipeline_lib.config import load_settings
from pipeline_lib.versions import RUNTIMES
from tests.packaging import ROOT

DEPLOY = (ROOT / "docs" / "deploy.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def test_the_event_hubs_to_create_are_the_configs_topics():
    listed = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| (xact\.[a-z0-9.]+) +\| +(\d+) \|$", DEPLOY, re.M)}
    assert listed == load_settings("local").topic_partitions()


def test_the_runtime_table_matches_what_ci_installs():
    for minor, (_, delta, _) in RUNTIMES.items():
        if minor == "4.2":
            continue
        pins = re.search(rf"^SPARK{minor.replace('.', '')}_PKGS\s*:=\s*(.+)$", MAKEFILE, re.M).group(1)
        spark = re.search(r"'pyspark==([\d.]+)'", pins).group(1)
        assert f"'delta-spark=={delta}'" in pins
        assert f"pyspark {spark} + delta-spark {delta}" in DEPLOY
