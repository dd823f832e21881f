"""The `xact-pipeline` command line as a main file, for spark-submit and Fabric Spark Job
Definitions that run batch work on a schedule (tables maintain, dlq replay); see pipeline_lib.cli.
Arguments: the CLI's, e.g. `tables maintain --env fabric --set key=value`."""

from pipeline_lib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
