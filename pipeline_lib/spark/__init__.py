"""Spark wiring: session builders, Kafka sources/sinks, Delta writers, streaming jobs.

Only this subpackage imports pyspark; the rest of pipeline_lib is plain Python.
"""
