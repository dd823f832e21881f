"""The Spark wiring: session builders, Kafka sources and sinks, the Delta tables, and one module per
streaming job (`run_<job>` starts its query, `main` is its entry point). Only this subpackage
imports pyspark; the rest of pipeline_lib is plain Python.
"""
