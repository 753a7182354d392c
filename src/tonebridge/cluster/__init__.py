"""Cluster mode: nodes that share a Redis directory, behind a SIP and an HTTP front (docs/cluster.md)."""
