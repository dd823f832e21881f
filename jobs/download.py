"""The download job for spark-submit and Fabric Spark Job Definitions (main file); see
pipeline_lib.spark.download. Arguments: --env, --conf-dir, --set key=value, --available-now, --timeout."""

from pipeline_lib.spark.download import main

if __name__ == "__main__":
    raise SystemExit(main())
