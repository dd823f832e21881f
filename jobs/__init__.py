"""Thin entry points, one per job, for spark-submit and platform job definitions.

    spark-submit jobs/ingest.py --env fabric --set storage.root=abfss://...

Each parses nothing itself: it hands its arguments to the CLI subcommand of the same name.
"""
