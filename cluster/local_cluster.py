"""Start a multi-node Ray cluster on this machine, every node on 127.0.0.1, for trying elrbench locally.

    python cluster/local_cluster.py --workers 2 --cpus 1      # head + 2 worker nodes; Ctrl-C stops all
    elrbench submit studies/demo.yaml --address 127.0.0.1:<port printed>

It runs in the foreground and prints the address to give `elrbench submit --address`; Ctrl-C or
SIGTERM stops every node it started. `ray start --address` cannot add a second node here: with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which keeps Ray on 127.0.0.1, see docs/ and environment notes)
Ray refuses to join another node on the same machine, so the nodes are started with Ray's own
ray.cluster_utils.Cluster, the helper Ray uses for its multi-node tests.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="worker nodes besides the head (default 2)")
    ap.add_argument("--cpus", type=float, default=1, help="CPUs each node offers (default 1)")
    ap.add_argument("--head-cpus", type=float, default=None, help="CPUs of the head (default: --cpus)")
    ap.add_argument("--gpus", type=float, default=0, help="GPUs each worker node offers (default 0)")
    ap.add_argument("--address-file", default=None, help="also write the address to this file")
    a = ap.parse_args()
    if a.workers < 0 or a.cpus <= 0:
        print("error: --workers must be >= 0 and --cpus > 0", file=sys.stderr)
        return 2

    from ray.cluster_utils import Cluster

    node = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={
        **node, "num_cpus": a.head_cpus if a.head_cpus is not None else a.cpus})
    for _ in range(a.workers):
        cluster.add_node(**node, num_cpus=a.cpus, num_gpus=a.gpus)
    cluster.wait_for_nodes()
    print(f"ray cluster: {1 + a.workers} nodes on 127.0.0.1, address {cluster.address}", flush=True)
    print(f"  elrbench submit SPEC --address {cluster.address}", flush=True)
    if a.address_file:
        with open(a.address_file + ".tmp", "w") as f:
            f.write(cluster.address)
        os.replace(a.address_file + ".tmp", a.address_file)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("stopping the cluster", flush=True)
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
