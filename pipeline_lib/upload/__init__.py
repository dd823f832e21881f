"""The upload stage's work, without Spark: storage backends (local lake, OneLake), one cached file
into the lake, verified, and a batch of cached records routed by outcome.
"""
