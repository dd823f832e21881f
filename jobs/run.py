"""Every stage in one supervised Spark application, for spark-submit and a Fabric Spark Job
Definition (main file); see pipeline_lib.spark.jobs and pipeline_lib.spark.supervisor.
Arguments: --env, --conf-dir, --set key=value, --stages a,b, --available-now, --timeout."""

from pipeline_lib.spark.jobs import run_main as main

if __name__ == "__main__":
    raise SystemExit(main())
