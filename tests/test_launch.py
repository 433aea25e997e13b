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
from uat_jax.errors import UatError

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
  """jax's SLURM detection (what MULTIHOST=1 sbatch --ntasks-per-node=<GPUs> runs: one run over
  every GPU) for every task of the job: one process per GPU, process ids 0..n-1, the
  coordinator on the first node, and each process's local device its SLURM_LOCALID, so that
  together they cover every GPU of every node exactly once."""
  from jax._src import clusters  # jax's own detection, as jax.distributed.initialize calls it
  opts = sbatch_options()
  nodes = nodes or int(opts["nodes"])
  per_node = gpus or int(opts["gpus-per-node"])  # one task per GPU
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
                "/mnt/shared/c10/tpu/"):
    assert piece in remote, piece
  assert "--multihost" not in remote  # a grid: one worker per chip on every host
  proc = subprocess.run(["bash", "launch/tpu_pod.sh", "tpu1", "zone-a", "cifar10_study",
                         "/mnt/shared/c10"], cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, DRY_RUN="1", MULTIHOST="1"), timeout=60)
  assert "--multihost" in proc.stdout.split("--command", 1)[1]  # one run over the slice


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


def test_a_four_gpu_host_runs_one_worker_per_gpu_and_restarts_a_killed_one(tmp_path):
  """The launcher on a simulated 4-GPU host (CUDA_VISIBLE_DEVICES=0,1,2,3): four real worker
  processes, one per GPU, share 8 pieces by the scheduler's claims; every GPU runs pieces side by
  side, no piece finishes twice, and a worker killed (SIGKILL) in the middle of a piece is started
  again and its piece finished."""
  import signal
  import sys
  import time
  from uat_jax.study import placement
  envs = placement.plan({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 1)
  assert envs == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]
  assert placement.plan({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4) == []  # one run, all four
  assert placement.plan({"CUDA_VISIBLE_DEVICES": "3"}, 1) == []  # SLURM's one GPU per task
  root = tmp_path / "root"
  root.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
  env["PYTHONPATH"] = REPO
  result = []
  thread = threading.Thread(target=lambda: result.append(placement.launch(
      [sys.executable, os.path.join(REPO, "tests", "programs", "placement_worker.py"),
       str(root)], envs, str(tmp_path / "workers"), poll_s=0.05, env=env)))
  thread.start()
  deadline = time.time() + 120
  started = root / "started"
  while time.time() < deadline and not (started.is_dir() and any(
      p.name.startswith("p4.") for p in started.iterdir())):
    time.sleep(0.02)
  victim = int(next(p.name for p in started.iterdir() if p.name.startswith("p4.")).split(".")[1])
  os.kill(victim, signal.SIGKILL)
  (root / "killed").touch()  # lets p4 finish (in the worker started again)
  thread.join(timeout=120)
  logs = "".join(p.read_text() for p in (tmp_path / "workers").iterdir())
  assert result == [0], logs[-3000:]
  finished = [line.split() for line in (root / "finished.log").read_text().splitlines()]
  names = [f[0] for f in finished]
  assert sorted(names) == [f"p{i}" for i in range(8)]  # each piece finished exactly once
  assert {f[1] for f in finished[:4]} == {"0", "1", "2", "3"}  # every GPU ran a piece
  assert next(int(f[2]) for f in finished if f[0] == "p4") != victim  # resumed by another run


def test_slurm_and_tpu_hosts_get_one_worker_per_device():
  """Grids on SLURM (2 nodes x 8 GPUs: one task per node, which starts a worker per GPU; array
  tasks share ROOT's claims) and on a TPU pod slice (4 hosts x 4 chips: one study process per
  host, a worker per chip with its own chip and mesh-controller port), none joined into one JAX
  job; --multihost stays for a single run over every device."""
  from uat_jax.study import placement
  opts = sbatch_options()
  assert opts["ntasks-per-node"] == "1" and opts["gpus-per-node"] == "8"
  text = open(os.path.join(REPO, "launch", "slurm.sbatch")).read()
  assert '${MULTIHOST:+--multihost}' in text
  gpus = {(node, env["CUDA_VISIBLE_DEVICES"]) for node in range(int(opts["nodes"]))
          for env in placement.plan({"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, 1)}
  assert len(gpus) == 16
  assert [e["CUDA_VISIBLE_DEVICES"] for e in placement.plan(
      {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, 2)] == ["0,1", "2,3", "4,5", "6,7"]
  chips = [(host, env["TPU_VISIBLE_CHIPS"], env["TPU_MESH_CONTROLLER_PORT"]) for host in range(4)
           for env in placement.plan({"TPU_VISIBLE_CHIPS": "0,1,2,3"}, 1)]
  assert len(set(chips)) == 16 and len({c[1:] for c in chips}) == 4
  assert all(e["TPU_CHIPS_PER_PROCESS_BOUNDS"] == "1,1,1" and e["TPU_PROCESS_BOUNDS"] == "1,1,1"
             for e in placement.plan({"TPU_VISIBLE_CHIPS": "0,1,2,3"}, 1))
  assert placement.plan({"TPU_VISIBLE_CHIPS": "0,1,2,3"}, 2)[1]["TPU_VISIBLE_CHIPS"] == "2,3"
  with pytest.raises(UatError, match="does not divide the 8 GPU devices"):
    placement.plan({"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, 3)
