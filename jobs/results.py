"""Results job: xact.downloads.results -> xact_attachments (see pipeline_lib.spark.results)."""

import sys

from pipeline_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["results", *sys.argv[1:]]))
