"""The download stage's work, without Spark: one attachment from its source into the cache (guarded
HTTP fetch, URL, content and presigned-URL policies), and a batch of pending records routed by outcome.
"""
