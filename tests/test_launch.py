"""The launch scripts: shellcheck, and the process and device layout launch/slurm.sbatch and
launch/tpu_pod.sh give jax.distributed, simulated with the environment SLURM, a TPU VM's metadata
server or GKE sets for each process (no cluster)."""

import http.server
import os
import re
import shutil
import subprocess
import threading

import pytest

from tests.helpers import REPO

SCRIPTS = sorted(os.path.join("launch", f) for f in os.listdir(os.path.join(REPO, "launch"))
                 if f.endswith((".sh", ".sbatch")))


def test_launch_scripts_pass_shellcheck():
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck; .ci/run "
                "installs it when it runs as root)")
  proc = subprocess.run(["shellcheck", *SCRIPTS], cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-3000:]


def sbatch_options():
  text = open(os.path.join(REPO, "launch", "slurm.sbatch")).read()
  return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.MULTILINE))


@pytest.mark.parametrize("nodes,gpus", [(None, None), (1, 4)])  # the script's 2 x 8, and 1 x 4
def test_slurm_layout_gives_every_gpu_one_process(monkeypatch, nodes, gpus):
  """jax's SLURM detection (what --multihost runs) for every task of the job: one process per
  GPU, process ids 0..n-1, the coordinator on the first node, and each process's local device
  its SLURM_LOCALID, so that together they cover every GPU of every node exactly once."""
  from jax._src import clusters  # jax's own detection, as jax.distributed.initialize calls it
  opts = sbatch_options()
  nodes = nodes or int(opts["nodes"])
  per_node = gpus or int(opts["ntasks-per-node"])
  assert (gpus or int(opts["gpus-per-node"])) == per_node  # one task per GPU
  hostnames = [f"gpu-{i:02d}" for i in range(1, nodes + 1)]
  seen = set()
  for node in range(nodes):
    for local in range(per_node):
      env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": ",".join(hostnames),
             "SLURM_NTASKS": str(nodes * per_node), "SLURM_PROCID": str(node * per_node + local),
             "SLURM_LOCALID": str(local), "SLURM_NODEID": str(node)}
      for k in list(os.environ):
        if k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE")):
          monkeypatch.delenv(k, raising=False)
      for k, v in env.items():
        monkeypatch.setenv(k, v)
      coordinator, count, pid, local_ids = (
          clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None,
                                                                   None))
      assert coordinator.split(":")[0] == hostnames[0]
      assert count == nodes * per_node and pid == node * per_node + local
      assert list(local_ids) == [local]
      seen.add((hostnames[node], local))
  assert len(seen) == nodes * per_node  # every GPU of every node, once


class _FakeMetadata(http.server.BaseHTTPRequestHandler):
  """The GCE metadata server of one TPU VM worker, as a pod slice's workers see it: the
  attributes jax.distributed reads (agent-worker-number, worker-network-endpoints, tpu-env)."""
  attributes: dict = {}

  def do_GET(self):  # noqa: N802 -- the http.server interface
    key = self.path.rsplit("/", 1)[-1]
    ok = self.headers.get("Metadata-Flavor") == "Google" and key in self.attributes
    body = (self.attributes[key] if ok else "not found").encode()
    self.send_response(200 if ok else 404)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):
    pass


@pytest.mark.parametrize("scheduler", ["gce", "gke", "gke_multislice"])
def test_tpu_pod_layout_gives_every_host_its_chips(monkeypatch, scheduler):
  """jax's TPU detection (what --multihost runs on a pod slice) for every worker, with the
  environment each scheduler gives it (the metadata server is a local stand-in): a TPU VM slice
  of 4 hosts (GCE: the metadata server's agent-worker-number and worker-network-endpoints), a GKE
  JobSet of 4 hosts (TPU_WORKER_HOSTNAMES, TPU_WORKER_ID), and 2 slices of 2 hosts (GKE with
  the MEGASCALE_* variables). One process per host, process ids 0..n-1 over the slices, the
  coordinator on the first worker of the first slice, and no local device restriction, so each
  process drives all of its host's chips."""
  from jax._src import clusters
  from jax._src.clusters import cloud_tpu_cluster
  for module in (clusters.cluster, cloud_tpu_cluster):  # what a TPU VM's jax finds at start-up
    monkeypatch.setattr(module, "running_in_cloud_tpu_vm", True)
  for k in list(os.environ):
    if k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE", "GCE_METADATA", "JAX_COORDINATOR")):
      monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the stand-in is local, whatever proxy is set
  monkeypatch.setenv("no_proxy", "127.0.0.1")
  ips = ["10.130.0.2", "10.130.0.3", "10.130.0.4", "10.130.0.5"]
  slices, per_slice = (2, 2) if scheduler == "gke_multislice" else (1, 4)
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeMetadata)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  seen = []
  try:
    for s in range(slices):
      for w in range(per_slice):
        monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{server.server_port}")
        _FakeMetadata.attributes = {"tpu-env": "ACCELERATOR_TYPE: 'v4-32'\n"}
        if scheduler == "gce":
          _FakeMetadata.attributes.update({
              "agent-worker-number": str(w),
              "worker-network-endpoints": ",".join(f"unused:{i}:{ip}" for i, ip in
                                                   enumerate(ips))})
        else:
          monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")
          hosts = ips[s * per_slice:(s + 1) * per_slice]
          monkeypatch.setenv("TPU_WORKER_HOSTNAMES", ",".join(hosts))
          monkeypatch.setenv("TPU_WORKER_ID", str(w))
          if slices > 1:
            monkeypatch.setenv("MEGASCALE_COORDINATOR_ADDRESS", f"{ips[0]}:8080")
            monkeypatch.setenv("MEGASCALE_NUM_SLICES", str(slices))
            monkeypatch.setenv("MEGASCALE_SLICE_ID", str(s))
        coordinator, count, pid, local_ids = (
            clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None,
                                                                     None, 30))
        assert coordinator == f"{ips[0]}:{cloud_tpu_cluster.coordinator_port}"
        assert count == slices * per_slice and local_ids is None
        seen.append(pid)
  finally:
    server.shutdown()
    server.server_close()
  assert seen == list(range(slices * per_slice))  # every host once, in worker order

def test_tpu_pod_dry_run_ships_the_commit_and_runs_under_nohup():
  """DRY_RUN=1 prints the per-host commands: the code is `git archive HEAD` (never the working
  tree), every worker gets a Python >= 3.11 environment once and runs the study under nohup with
  its own log, so rerunning resumes."""
  proc = subprocess.run(["bash", "launch/tpu_pod.sh", "tpu1", "zone-a", "cifar10_study",
                         "/mnt/shared/c10"], cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, DRY_RUN="1"), timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0].startswith("git archive --format=tar.gz") and lines[0].endswith("HEAD ")
  assert "tpu-vm scp" in lines[1] and "--worker=all" in lines[1]
  assert "--worker=0" in lines[3] and "prepare_data.sh" in lines[3]  # one download, worker 0
  remote = proc.stdout.split("--command", 1)[1]
  for piece in ("sys.version_info < (3, 11)", "uv venv --python 3.11", "jax[tpu]==0.9.0",
                "nohup .venv/bin/python -m uat_jax.study --study=\\'cifar10_study\\'",
                "--multihost", "/mnt/shared/c10/tpu/"):
    assert piece in remote, piece


FAKE_SRUN = """#!/usr/bin/env bash
# srun on one machine: drops srun's options and runs the command, output to --output.
out=/dev/stdout
while [[ "${1:-}" == --* ]]; do
  case "$1" in --output=*) out="${1#--output=}"; out="${out//%t/0}" ;; esac
  shift
done
exec "$@" >> "$out" 2>&1
"""


@pytest.mark.slow
def test_slurm_wrapper_forwards_sigterm_and_the_training_checkpoints(tmp_path):
  """A real process tree: launch/slurm.sbatch (bash) -> srun (a local stand-in) -> the study
  (one process, jax.distributed over the simulated SLURM environment). SIGTERM to the wrapper,
  as SLURM sends it before the time limit, reaches the training, which saves a checkpoint; the
  job exits with 143 (and asks SLURM to requeue it)."""
  import signal
  import time
  srun = tmp_path / "srun"
  srun.write_text(FAKE_SRUN)
  srun.chmod(0o755)
  root = tmp_path / "root"
  env = dict(os.environ, SRUN=str(srun), SLURM_JOB_ID="77", SLURM_STEP_NODELIST="localhost",
             SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
  wrapper = subprocess.Popen(["bash", "launch/slurm.sbatch", "fashion_mnist_study:quick",
                              str(root)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  first = root / "runs" / "entm_beta0.3_s0" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and wrapper.poll() is None and not (
      first.is_dir() and any(p.name.isdigit() for p in first.iterdir())):
    time.sleep(0.1)
  wrapper.send_signal(signal.SIGTERM)
  _, err = wrapper.communicate(timeout=300)
  log = (root / "slurm" / "77_0_0.log").read_text()
  assert wrapper.returncode == 143, err[-2000:] + log[-2000:]
  line = next(x for x in log.splitlines() if x.startswith("preempted (SIGTERM)"))
  # (whichever training the signal reached: the study may have moved on to the next run)
  step, path = re.match(r"preempted \(SIGTERM\): checkpoint saved at step (\d+) in (\S+);",
                        line).groups()
  assert os.path.isdir(os.path.join(path, step))  # the checkpoint the SIGTERM asked for
