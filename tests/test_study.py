"""The study pipeline end to end on real Fashion-MNIST: `launch/reproduce.sh --quick` (train six
methods, evaluate with the paper and strong presets, compare input Jacobians, write the report),
its rerun (every piece skipped), and the report rebuilt from its JSON alone."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO
from uat_jax.errors import UatError


@pytest.mark.slow
def test_reproduce_quick_end_to_end_then_resume(tmp_path):
  root, out = tmp_path / "study", tmp_path / "results"
  env = dict(os.environ, ROOT=str(root), OUT=str(out), PYTHON=sys.executable)
  first = subprocess.run(["bash", "launch/reproduce.sh", "--quick"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  report = (out / "REPORT.md").read_text()
  for section in ("## Verdicts", "## Robust accuracy", "### Every attack at eps 0.2",
                  "## Input-Jacobian norms", "## Training curves", "## Gradient-masking checks",
                  "## Hyper-parameter sweep"):
    assert section in report, section
  for claim in range(1, 6):
    assert f"**{claim}. " in report
  for figure in ("accuracy_vs_eps", "jacobian_histograms", "training_curves"):
    assert (out / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| AT+EntM | regularizer.beta | 0.3: " in report  # swept on the validation split

  # The methods' signatures, from the JSON the report was built from.
  run = lambda m: json.loads((out / "data" / "runs" / f"{m}_s0.json").read_text())
  pgd = lambda m: run(m)["eval"]["paper"]["attacks"]["PGD-20"]["accuracy"]["0.2"]
  assert pgd("at") > pgd("standard") + 0.1  # AT resists PGD where standard training has 0%
  assert run("entm")["train"]["eval/mean_entropy"] > (
      run("standard")["train"]["eval/mean_entropy"] + 0.1)
  sweep = json.loads((root / "sweep.json").read_text())
  assert sweep["at_entm"]["values"]["0.3"]["eval/num_examples"] == 100  # validation, not test
  assert json.loads((root / "runs" / "at_s0" / "eval" / "paper" / "results.json").read_text())[
      "split"] == "test"

  # Rerunning skips every finished piece; the report rebuilt from data/ alone is the same.
  again = subprocess.run(["bash", "launch/reproduce.sh", "--quick"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("finished before") == 2 + 6 and "evaluated before" in again.stderr
  assert "Jacobians compared before" in again.stderr
  assert (out / "REPORT.md").read_text() == report
  rebuilt = subprocess.run([env["PYTHON"], "-m", "uat_jax.report", "--from_data",
                            f"--out={out}"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
  assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
  assert (out / "REPORT.md").read_text() == report


def test_the_pilot_rule_picks_the_first_regime_that_overfits(tmp_path):
  from uat_jax import config_lib, study

  def run(name, size, val, train):
    w = tmp_path / name
    w.mkdir()
    c = config_lib.base_config()
    c.data.train_size, c.num_epochs, c.batch_size = size, 2.0, 100
    (w / "config.json").write_text(c.to_json())
    steps = [int(2 * size / 100 * (i + 1) / len(val)) for i in range(len(val))]
    (w / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "eval/pgd_accuracy": v, "train/accuracy_adv": t}) + "\n"
        for s, v, t in zip(steps, val, train)))

  # Decay at half of training: R1 still rises after it, R2 peaks then falls with a widening gap.
  run("R1", 1000, [0.5, 0.6, 0.65, 0.66], [0.5, 0.62, 0.67, 0.68])
  run("R2", 500, [0.5, 0.6, 0.70, 0.68], [0.5, 0.62, 0.75, 0.80])
  choice = study.pilot_choice(str(tmp_path))
  assert choice["chosen"] == "R2" and choice["overfitting_observed"]
  assert choice["candidates"]["R2"]["drop"] == pytest.approx(0.02)
  assert choice["candidates"]["R2"]["gap"] == pytest.approx(0.12)
  assert not choice["candidates"]["R1"]["overfits"]
  metrics = tmp_path / "R2" / "metrics.jsonl"  # R2 cut short: not finished
  metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
  with pytest.raises(UatError, match="has not finished"):
    study.pilot_choice(str(tmp_path))
