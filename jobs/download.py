"""Download job: xact.downloads.pending -> cache, routed to cached / retry / dlq / results
(see pipeline_lib.spark.download)."""

import sys

from pipeline_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["download", *sys.argv[1:]]))
