"""dlq-table job (see pipeline_lib.spark.dlq)."""

import sys

from pipeline_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["dlq-table", *sys.argv[1:]]))
