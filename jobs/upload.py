"""Upload job: xact.downloads.cached -> the lake (see pipeline_lib.spark.upload)."""

import sys

from pipeline_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["upload", *sys.argv[1:]]))
