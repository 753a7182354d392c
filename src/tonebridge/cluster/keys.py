"""The names of the cluster's Redis keys, in one place (their meaning: cluster/directory.py)."""

PREFIX = "tonebridge:"
NODES = PREFIX + "nodes"
NODE = PREFIX + "node:"
HOME = PREFIX + "home:"
CALL = PREFIX + "call:"
MOVE = PREFIX + "move:"
