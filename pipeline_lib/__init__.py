"""xact attachment pipeline: Kafka claim events -> attachments in OneLake, inventory in Delta.

The top-level modules are the shared pure-Python core; `download/` and `upload/` hold each I/O
stage's work without Spark; `local/` is local tooling (broker, sample servers, demo) that no
streaming job imports; `spark/` is the only code that imports pyspark and wires the rest into
Structured Streaming jobs.
"""

__version__ = "0.1.0"
