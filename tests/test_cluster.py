"""A 2-node Ray cluster on loopback started by cluster/local_cluster.py, a study submitted to it by
address whose trials land on both nodes; and the cluster recipes parse with the fields elrbench needs."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import yaml

from tests.conftest import ROOT
from tests.conftest import cli as run

CLUSTER = ROOT / "cluster"


def test_a_two_node_loopback_cluster_runs_trials_on_both_nodes(tmp_path, base_spec):
    addr_file = tmp_path / "address"
    proc = subprocess.Popen([sys.executable, str(CLUSTER / "local_cluster.py"), "--workers", "1", "--cpus", "1",
                             "--address-file", str(addr_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not addr_file.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert addr_file.exists(), proc.stdout.read().decode()[-2000:] if proc.poll() is not None else "no address"
        address = addr_file.read_text()
        assert address.startswith("127.0.0.1:")
        base_spec["grid"].update(seed=[0, 1])
        base_spec["budget"].update(steps=40, log_every=10)
        base_spec["resources"] = {"cpus_per_worker": 1}
        spec = tmp_path / "s.yaml"
        spec.write_text(yaml.safe_dump(base_spec))
        r = run("submit", str(spec), "--address", address)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"on Ray at {address}" in r.stdout
        workers = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/trials/*/worker-0.json")]
        assert len(workers) == 2
        assert len({w["node_id"] for w in workers}) == 2  # one CPU per node: one trial on each node
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0 and "stopping the cluster" in out


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_cluster_launcher_yaml_has_what_elrbench_needs():
    (cfg,) = _docs(CLUSTER / "aws-gpu.yaml")
    assert cfg["provider"]["type"] == "aws" and cfg["cluster_name"]
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu and all(t["max_workers"] >= 1 for t in gpu)
    setup = " ".join(cfg["setup_commands"])
    assert "constraints.txt" in setup and "pip install" in setup  # the tested versions on every node
    assert "elrbench" in setup
    # the study folder must be shared by all nodes: the recipe mounts shared storage at the same path
    assert any("/shared" in c for c in cfg["setup_commands"] + cfg.get("initialization_commands", []))
    assert "ray start --head" in " ".join(cfg["head_start_ray_commands"])
    assert "ray start --address" in " ".join(cfg["worker_start_ray_commands"])


def test_the_kuberay_manifest_has_what_elrbench_needs():
    docs = _docs(CLUSTER / "kuberay.yaml")
    kinds = {d["kind"]: d for d in docs}
    assert {"RayJob", "PersistentVolumeClaim"} <= set(kinds)
    job = kinds["RayJob"]
    assert job["apiVersion"].startswith("ray.io/")
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("elrbench submit ") and "--address auto" in entry  # the RayJob's own cluster
    assert "output_dir=/shared/" in entry
    cluster = job["spec"]["rayClusterSpec"]
    pvc = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:  # every pod mounts the shared study folder at the same path
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert any(v.get("persistentVolumeClaim", {}).get("claimName") == pvc for v in vols.values())
        (c,) = [c for c in pod["spec"]["containers"] if c["name"].startswith("ray-")]
        assert any(m["mountPath"] == "/shared" for m in c["volumeMounts"])
    gpu_groups = [g for g in cluster["workerGroupSpecs"]
                  if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])]
    assert gpu_groups and gpu_groups[0]["maxReplicas"] >= gpu_groups[0]["minReplicas"] >= 0
