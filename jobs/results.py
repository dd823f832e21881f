"""The results job for spark-submit and Fabric Spark Job Definitions (main file); see
pipeline_lib.spark.results (the query) and pipeline_lib.spark.jobs (its entry point).
Arguments: --env, --conf-dir, --set key=value, --available-now, --timeout."""

from pipeline_lib.spark.jobs import results_main as main

if __name__ == "__main__":
    raise SystemExit(main())
