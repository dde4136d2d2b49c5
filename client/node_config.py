"""Names of the SuperNode ``--node-config`` keys a ClientApp reads (set by the simulation
engine or by ``privatune node start``), in one place for every module that reads them."""

from __future__ import annotations

PARTITION_ID_KEY = "partition-id"  # simulation: which partition a virtual node holds
NUM_PARTITIONS_KEY = "num-partitions"  # simulation under `flwr run`: how many nodes
NODE_CONFIG_FILE_KEY = "node-config-file"  # a real node: its resolved node.toml (policy)
