"""Ingest job: xact.events.raw -> xact.downloads.pending + xact_events (see pipeline_lib.spark.ingest)."""

import sys

from pipeline_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["ingest", *sys.argv[1:]]))
