"""xact attachment pipeline: Kafka claim events -> attachments in OneLake, inventory in Delta.

Top-level modules are the pure-Python core (no pyspark import); `pipeline_lib.spark` wires them
into Spark Structured Streaming jobs.
"""

__version__ = "0.1.0"
