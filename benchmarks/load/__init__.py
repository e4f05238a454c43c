"""Load and fault tools for the Serve endpoint, used by tests and benchmarks, never by serving.

``soak``: an open-loop load generator and the rule that judges a soak (memory, tail
latency, errors); ``replicas``: which processes run an application's replicas (to kill
one, or to watch their memory).
"""
