"""Local tooling, never on a streaming job's run path: the single-node Kafka broker, the sample
attachment server with fault modes, the OneLake DFS test server, sample events and the demo.
"""
