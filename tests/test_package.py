"""The package as a user installs it: the built wheel, with the core dependencies alone, attacks
and measures a Flax model in a fresh virtual environment where TensorFlow, TFDS and matplotlib
cannot be imported; its version is pyproject's; its console script lists its subcommands."""

import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO

SNIPPET = """
import importlib.util, sys
import flax.linen as nn
import jax, jax.numpy as jnp
import uat_jax
from uat_jax import attacks, evaluate, jacobian, stats

class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1))))

model = Tiny()
x = jax.random.uniform(jax.random.PRNGKey(0), (8, 6, 6, 1))
params = model.init(jax.random.PRNGKey(1), x)
f = jax.tree_util.Partial(lambda p, v: model.apply(p, v), params)
y = jnp.argmax(f(x), -1)
x_adv = attacks.pgd(f, x, y, key=jax.random.PRNGKey(2), eps=0.1, step_size=0.025, steps=5)
assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.1 + 1e-6
norms = jacobian.jacobian_norms(f, x, y, output="logits", norms=("fro",), chunk_size=4)
assert norms["fro"].shape == (8,) and (norms["fro"] > 0).all()
missing = [m for m in ("tensorflow", "tensorflow_datasets", "matplotlib", "torch")
           if importlib.util.find_spec(m) is None]
from uat_jax import interop  # importable without torch; using it says what to install
try:
  interop.from_torch(None)
except Exception as e:
  print("interop:", e)
print("version", uat_jax.__version__, "from", uat_jax.__file__)
print("not installed:", ",".join(missing))
print("loaded:", ",".join(m for m in ("tensorflow", "matplotlib") if m in sys.modules) or "-")
"""


def core_distributions(requirements: list[str]) -> set[str]:
  """The installed distributions `requirements` (Requires-Dist lines without extras) need,
  with what they need, as this interpreter resolves them."""
  found, todo = set(), [Requirement(r) for r in requirements]
  while todo:
    req = todo.pop()
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
      continue  # an extra's requirement, or one for another platform
    name = re.sub(r"[-_.]+", "-", req.name).lower()
    if name in found:
      continue
    found.add(name)
    todo += [Requirement(r) for r in importlib.metadata.distribution(name).requires or []]
  return found


def link_distributions(names: set[str], site: str) -> None:
  """Links each distribution's top-level files (packages, modules, extensions, .dist-info) into
  `site`, so a fresh environment sees these distributions and nothing else."""
  for name in names:
    dist = importlib.metadata.distribution(name)
    for top in {str(f).split("/")[0] for f in dist.files or []}:
      source = os.path.realpath(os.path.join(str(dist.locate_file("")), top))
      target = os.path.join(site, top)
      if top not in ("..", "bin") and os.path.exists(source) and not os.path.exists(target):
        os.symlink(source, target)


@pytest.mark.slow
def test_the_wheel_with_the_core_alone_attacks_a_flax_model_without_tensorflow(tmp_path):
  dist = tmp_path / "dist"
  build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "-q", "-w", str(dist), REPO],
                         capture_output=True, text=True, timeout=300)
  assert build.returncode == 0, build.stderr[-3000:]
  wheel, = dist.glob("uat_jax-*.whl")
  with zipfile.ZipFile(wheel) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    names = z.namelist()
  assert "uat_jax/config/fashion_mnist.py" in names  # the recipes are packaged
  assert "uat_jax/config/cifar10_study.py" in names
  requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
              if line.startswith("Requires-Dist:")]
  core = core_distributions(requires)
  assert {"jax", "flax", "scipy"} <= core
  assert not core & {"tensorflow", "tensorflow-cpu", "tensorflow-datasets", "matplotlib"}

  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                 timeout=120)
  site = next((venv / "lib").glob("python3*/site-packages"))
  deps = tmp_path / "core"
  deps.mkdir()
  link_distributions(core, str(deps))
  (site / "core_dependencies.pth").write_text(str(deps) + "\n")
  install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--no-index", "--disable-pip-version-check", "--target", str(site),
                            str(wheel)], capture_output=True, text=True, timeout=300)
  assert install.returncode == 0, install.stderr[-3000:]
  run = subprocess.run([str(venv / "bin" / "python"), "-c", SNIPPET], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  from uat_jax.version import VERSION
  assert f"version {VERSION} from {site}" in run.stdout, run.stdout
  assert "not installed: tensorflow,tensorflow_datasets,matplotlib,torch" in run.stdout, run.stdout
  assert "interop: uat_jax.interop needs PyTorch: pip install 'uat_jax[torch]'" in run.stdout


def test_the_version_is_pyprojects_and_the_command_lists_its_subcommands():
  import tomllib
  from uat_jax import command
  from uat_jax.version import VERSION
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  assert project["scripts"]["uat-jax"] == "uat_jax.command:run"
  assert project["dynamic"] == ["version"]
  assert importlib.metadata.version("uat_jax") == VERSION
  with open(os.path.join(REPO, "CITATION.cff")) as f:
    assert f"version: {VERSION}\n" in f.read()
  with open(os.path.join(REPO, "CHANGELOG.md")) as f:
    assert f"## {VERSION} (" in f.read()
  assert command.main(["uat-jax", "--help"]) == 0
  for sub in command.SUBCOMMANDS:
    assert f"uat-jax {sub}" in command.__doc__
  assert command.main(["uat-jax", "fly"]) == 2


def test_config_show_lists_every_field_with_its_value_and_meaning(capsys):
  from uat_jax import command
  assert command.main(["uat-jax", "config", "list"]) == 0
  listing = capsys.readouterr().out
  assert "| fashion_mnist | Fashion-MNIST" in listing and "| cifar10_study |" in listing
  assert command.main(["uat-jax", "config", "show", "cifar10:at"]) == 0
  shown = capsys.readouterr().out
  assert "| `attack.eps` | `0.03137254901960784` | L-inf radius of the training attack" in shown
  assert "| `evals.pgd.type` | `'pgd'` | the evaluator class" in shown
  assert command.main(["uat-jax", "config", "show"]) == 2
  assert "usage: uat-jax config list" in capsys.readouterr().err


def test_results_of_a_model_uat_jax_did_not_train_say_what_was_evaluated():
  from uat_jax.evaluate import results
  python = {"num_examples": 100, "eps": [8 / 255], "attacks": {"APGD-CE": {}, "APGD-T": {}}}
  assert results.describe(python) == ("a model evaluated from Python: 100 examples, eps 0.03137, "
                                      "attacks APGD-CE, APGD-T")
  run = {**python, "model": "small_cnn", "method": "at", "dataset": "fashion_mnist",
         "checkpoint_step": 300, "preset": "quick"}
  assert results.describe(run) == "at small_cnn on fashion_mnist, step 300, preset quick"
