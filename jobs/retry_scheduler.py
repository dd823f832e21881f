"""retry-scheduler job (see pipeline_lib.spark.retry_scheduler)."""

import sys

from pipeline_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["retry-scheduler", *sys.argv[1:]]))
