"""The study pipeline end to end on real Fashion-MNIST: `launch/reproduce.sh --quick` (sweep,
train six methods and an ablation variant, evaluate best and last checkpoints with the paper and
strong presets, Jacobians with the temperature control, the report), its rerun (every piece
skipped), the report rebuilt from its JSON alone and a partial report; the pilot's rule, the
temperature matching, the scheduler's claims and the selection of pieces."""

import json
import math
import os
import re
import subprocess
import sys
import time
from unittest import mock

import numpy as np
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
  for section in ("## Status", "## Verdicts", "## Robust overfitting",
                  "## Best and last checkpoint", "## Differences to the baseline",
                  "## Input-Jacobian norms", "## Ablation", "## Gradient-masking checks",
                  "## Sweep"):
    assert section in report, section
  labels = ("reproduced", "no gain, within margin", "not reproduced", "inconclusive",
            "no reduction, within margin")
  for claim in range(1, 6):
    line = next(x for x in report.splitlines() if x.startswith(f"**{claim}. "))
    verdict = line.split(":", 1)[1].split(".**")[0]
    assert any(label in verdict for label in labels), line
    assert "pending" not in verdict, line
  for figure in ("differences_vs_eps", "robust_overfitting", "jacobian_vs_margin"):
    assert (out / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| EntM | regularizer.beta | eval/clean_accuracy | 0.3: " in report
  assert "train minus validation robust accuracy at the end: " in report

  # What the runs did, from the JSON the report was built from and the workdirs.
  run = lambda name: json.loads((out / "data" / "runs" / f"{name}.json").read_text())
  chosen = json.loads((root / "sweep.json").read_text())["entm"]["chosen"]
  assert chosen in (0.3, 1.0)  # by clean validation accuracy, EntM's best-checkpoint metric
  assert run(f"entm_beta{chosen:g}_s0")["train"]["eval/mean_entropy"] > (
      run("standard_s0")["train"]["eval/mean_entropy"] + 0.1)
  assert run("standard_s0")["best_metric"] == "eval/clean_accuracy"
  assert run("at_s0")["train"]["eval/num_examples"] == 100  # training read validation only
  assert run("at_s0")["evals"]["paper"]["checkpoint"] == "best"
  assert run("at_s0")["evals"]["paper_last"]["checkpoint"] == "last"
  # Each evaluation output is a named evaluator instance of the run's config, written to its own
  # folder (several suite instances in one config).
  saved = json.loads((root / "runs" / "at_s0" / "config.json").read_text())["evals"]
  assert {o: saved[o]["type"] for o in ("paper", "strong", "paper_last", "strong_grid")} == {
      o: "suite" for o in ("paper", "strong", "paper_last", "strong_grid")}
  assert saved["strong"]["preset"] == "" and saved["strong"]["output"] == "strong"
  results = json.loads((root / "runs" / "at_s0" / "eval" / "paper" / "results.json").read_text())
  assert results["split"] == "test" and results["surrogate_workdir"].endswith("at_s1")
  control = json.loads((root / "runs" / "at_s0" / "eval" / "jacobian_T_at_entm" /
                        "summary.json").read_text())
  assert control["temperature"] > 0 and control["matched"] == "at_entm"
  assert len(run("at_s0")["jacobian_T_at_entm"]["norms"]["probs/fro"]) == 16
  assert "jacobian_T_at_entm" not in run("at_s1")  # AT+EntM has no seed 1 to match

  # Rerunning skips every finished piece, here as one of two shards (as a job of a SLURM array
  # would); a failing piece is reported in the status table while the others go on.
  # 2 sweep runs, then 5 final runs (one is a sweep run) and 1 ablation run; 3 outputs per
  # final run, a deferred 4th for the 3 adversarially trained ones (last of all), 1 for the
  # ablation run; Jacobians of the 3 adversarially trained final runs and 1 temperature
  # control.
  from uat_jax import config as config_lib
  from uat_jax.study import pieces as pieces_lib
  quick = config_lib.from_file("fashion_mnist_study", "quick")
  names = [p.name for p in pieces_lib.pieces(quick, str(root))]
  assert len(names) == 2 + 4 + 1 + 5 * 3 + 3 + 1 + 3 + 1
  assert names[-3:] == [f"evaluate {r} strong_grid" for r in ("at_s0", "at_s1",
                                                             "at_entm_beta0.3_s0")]
  eps_run = lambda r, o: sorted(float(e) for e in run(r)["evals"][o]["masks"]["worst"])
  assert eps_run("at_s0", "strong") == [0.2] and eps_run("at_s0", "strong_grid") == [0.1]
  assert eps_run("standard_s0", "strong") == [0.1, 0.2]  # eps_by_method
  assert "strong_grid" not in run("standard_s0")["evals"]
  last = next(x for x in report.splitlines() if x.startswith("| AT | last |"))
  assert last.count("not evaluated") == 2  # PGD-20 and worst case at 0.1: paper_last is 0.2
  broken = "evaluate at_s1 paper_last"
  os.remove(root / "runs" / "at_s1" / "eval" / "paper_last" / "results.json")
  log = root / "logs" / (broken.replace(" ", "_") + ".log")
  log.unlink()
  log.mkdir()  # the piece's log cannot be opened: the piece fails
  mine = names.index(broken) % 2  # the shard that holds the broken piece
  bad = subprocess.run(
      [sys.executable, "-m", "uat_jax.study", "--study=fashion_mnist_study:quick",
       f"--root={root}", f"--shard={mine}/2"], cwd=REPO, capture_output=True, text=True,
      timeout=600)
  count = len(names[mine::2])
  assert bad.stderr.count(": finished before") == count - 1
  assert bad.returncode == 2 and f"| {broken} | failed (log: " in bad.stdout, bad.stderr[-3000:]
  assert f"Study status (shard {mine}/2): {count - 1} done, 1 failed, 0 pending" in bad.stdout
  assert bad.stderr.strip().splitlines()[-1].startswith("error: 1 piece(s) of the study failed")
  rebuilt = subprocess.run([sys.executable, "-m", "uat_jax.report", "--from_data",
                            f"--out={out}"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
  assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
  assert (out / "REPORT.md").read_text() == report

  # An unfinished study reports what is missing as pending, never a verdict.
  from uat_jax.report import build, collect
  os.remove(root / "runs" / "at_s0" / "eval" / "strong" / "results.json")
  partial = tmp_path / "partial"
  count = collect.collect(config_lib.from_file("fashion_mnist_study", "quick"),
                          str(root), str(partial / "data"))
  assert count["missing"] == 2  # with the piece that failed above
  text = build.build(str(partial / "data"), str(partial))
  claim1 = next(x for x in text.splitlines() if x.startswith("**1. "))
  assert "AT+EntM: pending" in claim1


def test_the_matching_temperature_equalizes_mean_entropy():
  from uat_jax.study import controls
  logits = np.random.default_rng(0).normal(size=(200, 10)).astype(np.float32) * 4
  for target in (0.3, 1.0, 2.0):
    t = controls.matching_temperature(logits, target)
    # Bisection to 60 halvings of log T; entropy is evaluated in float32 (error ~1e-6).
    assert controls.mean_entropy(logits, t) == pytest.approx(target, abs=1e-4)
  assert controls.matching_temperature(logits, controls.mean_entropy(logits, 1.0)) == pytest.approx(
      1.0, rel=1e-4)
  with pytest.raises(UatError, match="no temperature"):
    controls.matching_temperature(logits, math.log(10) + 0.1)  # above the uniform's entropy


def test_the_pilot_rule_picks_the_first_regime_that_overfits(tmp_path):
  from uat_jax import config as config_lib
  from uat_jax.study import pilot

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
  choice = pilot.pilot_choice(str(tmp_path))
  assert choice["chosen"] == "R2" and choice["overfitting_observed"]
  assert choice["candidates"]["R2"]["drop"] == pytest.approx(0.02)
  assert choice["candidates"]["R2"]["gap"] == pytest.approx(0.12)
  assert not choice["candidates"]["R1"]["overfits"]
  metrics = tmp_path / "R2" / "metrics.jsonl"  # R2 cut short: not finished
  metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
  with pytest.raises(UatError, match="has not finished"):
    pilot.pilot_choice(str(tmp_path))


@pytest.mark.parametrize("path,variants,dataset,train_eps,large_eps", [
    ("cifar10_study", ("", "wrn"), "cifar10", 8 / 255, 16 / 255),
    ("cifar100_study", ("", "wrn"), "cifar100", 8 / 255, 16 / 255),
    ("svhn_study", ("",), "svhn_cropped", 8 / 255, 16 / 255),
    ("mnist_study", ("",), "mnist", 0.3, 0.4)])
def test_the_accelerator_grids_build_and_validate_on_8_devices(tmp_path, path, variants, dataset,
                                                               train_eps, large_eps):
  """The accelerator grids (the *_study recipes but Fashion-MNIST's, plan v3.6): every run's
  config validates on 8 devices and holds out validation images for the sweep and the best
  checkpoint, kept by validation APGD-CE-20 for the adversarially trained methods; 10 seeds per
  method; paper, strong and adaptive at the best and last checkpoints over the eps grid on the
  whole test split, the ablation at the training eps and the large eps; claim 1's estimand is
  last versus best; before the sweep has run only the sweep pieces and the pending choice are
  listed."""
  from uat_jax import validation
  from uat_jax import config as config_lib
  from uat_jax.study import pieces, spec
  for variant in variants:
    s = config_lib.from_file(path, variant)
    chosen = {m: {"chosen": s.sweep[m][1][0]} for m in s.sweep}
    runs = spec.sweep_runs(s) + spec.final_runs(s, chosen) + spec.ablation_runs(s, chosen)
    assert len({r.name for r in runs}) == 12 + (7 * 10 - 4) + 3 * 3
    control = [r for r in runs if r.method == "at_wa"]  # AT with weight averaging (plan v3.11)
    assert len(control) == 10 and all(
        r.config.method == "at" and r.config.optimizer.weight_average == 0.999 for r in control)
    for r in runs:
      validation.validate(r.config, 8)
      assert r.config.data.name == dataset and r.config.data.validation_size > 0
      assert r.config.attack.eps == pytest.approx(train_eps)
      assert r.config.best_checkpoint.metric == (
          f"suite/worst_case@{train_eps:.4g}" if r.method.startswith("at")
          else "eval/clean_accuracy")
      assert r.config.evals.suite.select == "apgd_ce20" and r.config.evals.suite.every_steps > 0
    assert s.large_eps == pytest.approx(large_eps) and s.estimand == "last_vs_best"
    assert max(s.evals.paper.eps) == pytest.approx(large_eps)
    assert sorted(s.evals) == ["adaptive", "adaptive_last", "paper", "paper_last", "strong",
                               "strong_last"]
    assert all(o.eps == s.evals.paper.eps and o.num_examples == 0 for o in s.evals.values())
    for output in s.ablation_evals.values():
      assert output.eps == pytest.approx((train_eps, large_eps))
    names = [p.name for p in pieces.pieces(s, str(tmp_path))]
    assert len(names) == 13 and names[-1] == "choose"


def test_the_dry_run_lists_every_training_run_with_its_cost(tmp_path):
  """--dry_run: every training run with its steps, FLOPs per step from XLA's cost analysis and
  hours per accelerator; nothing trained. An AT step with PGD-10 costs less than 11 standard
  steps (the attack's backward passes need no weight gradients) and more than 6."""
  from uat_jax import config as config_lib
  from uat_jax.study import cost
  s = config_lib.from_file("fashion_mnist_study", "quick")
  text = cost.dry_run(s, str(tmp_path))
  rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines()
          if line.startswith("| ") and not line.startswith(("| run", "| total"))}
  assert set(rows) >= {"standard_s0", "at_s0", "at_s1", "entm_beta0.3_s0", "entm_beta1_s0",
                       "at_entm_beta0.3_on_clean_s0"}
  assert rows["at_s0"][1:5] == ["small_cnn", "at", "float32", "30"]
  standard, at = float(rows["standard_s0"][5]), float(rows["at_s0"][5])
  assert 6 < at / standard < 11
  assert "| total |" in text and not os.listdir(tmp_path)
  # With the user's measurement of the AT step on two devices: that rate, the hours it gives,
  # and the grid's wall-clock when the runs share the devices.
  from uat_jax.study import spec
  chosen = {m: {"key": k, "chosen": v[0]} for m, (k, v) in s.sweep.items()}
  c = next(r.config for r in spec.final_runs(s, chosen) if r.name == "at_s0")
  row = {"device": "mine", "step": "at", "model": "small_cnn", "image": [28, 28, 1],
         "dtype": "float32", "batch": c.batch_size, "attack_steps": c.attack.steps,
         "images_per_s": 64.0, "gflop_per_image": at / c.batch_size}
  table = tmp_path.parent / "throughput.json"
  table.write_text(json.dumps([row]))
  with mock.patch.dict(os.environ, {"UAT_JAX_THROUGHPUT": str(table)}):
    text = cost.dry_run(s, str(tmp_path), devices=2)
  line = next(x for x in text.splitlines() if x.startswith("| at_s0 |")).split(" | ")
  assert line[6:8] == ["64", "measured"] and float(line[8][:-2]) == pytest.approx(
      30 * c.batch_size / 64 / 3600, rel=0.01)
  assert "on mine" in text and "Wall-clock of the grid on 2 devices (2 runs at a time" in text
  # The evaluations' upper bound: its gradient passes at the AT step's rate of passes (64
  # images/s x 11 passes: PGD-10 and the update's).
  passes, hours = re.search(r"at most ([\d.,]+) billion gradient passes, at most ([\d.,]+) "
                            r"device-hours", text).groups()
  assert float(hours) == pytest.approx(float(passes) * 1e9 / (64 * 11) / 3600, rel=0.01)
  # Per image and eps: AutoAttack's sequence (APGD-CE 100, APGD-T 100 x 9 targets, FAB-T 2 x 100
  # x 9, Square 5,000 forward passes = 5,000 / 3) and the adaptive preset (4 x 100, SPSA 2 x 100
  # x 128 forward passes).
  from uat_jax import evaluate
  per = lambda name: sum(evaluate.passes(e) for e in evaluate.preset(name))
  assert per("strong") == pytest.approx(100 + 900 + 1800 + 5000 / 3)
  assert per("adaptive") == pytest.approx(400 + 2 * 100 * 128 / 3)


def test_a_piece_finished_between_the_listing_and_the_claim_is_not_run_again(tmp_path):
  """Another process may finish a piece after this one listed it unfinished and before it
  takes the claim (the other releases it when done): the piece is checked again under the
  claim and not run twice."""
  from uat_jax.study import pieces as pieces_lib
  from uat_jax.study import scheduler
  answers, ran = iter([False]), []  # unfinished when listed, finished from then on
  piece = pieces_lib.Piece("p", lambda: next(answers, True), (), lambda: ran.append(1))
  assert scheduler.schedule(lambda: [piece], str(tmp_path), poll_s=0.01) == {"p": "done"}
  assert ran == []


def test_processes_share_a_study_by_claims_and_wait_for_each_other(tmp_path):
  """Two processes on one study: the piece another process holds (a real POSIX lock on its
  claim, taken by a second process) is left to it, the independent pieces run meanwhile, the
  piece that needs the held one waits until it is finished, and so does a piece whose
  directory the other process has locked; with shards, a need of another shard that nobody
  runs leaves the piece pending."""
  from uat_jax import lock
  from uat_jax.study import pieces, scheduler
  root, ran = str(tmp_path / "root"), []

  def piece(name, needs=(), locks=None):
    marker = tmp_path / (name.replace(" ", "_") + ".done")

    def work():
      with lock.lock(locks or str(tmp_path / name.replace(" ", "_")), "test"):
        ran.append(name)
        marker.write_text("")
    return pieces.Piece(name, marker.exists, needs, work)

  claim, ready = scheduler.claim_dir(root, "train a"), tmp_path / "ready"
  os.makedirs(claim)
  other = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, json, os, pathlib, time
fd = os.open({os.path.join(claim, lock.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({{"pid": os.getpid(), "purpose": "study piece train a"}}).encode())
pathlib.Path({str(ready)!r}).write_text("")
time.sleep(0.5)
pathlib.Path({str(tmp_path / "train_a.done")!r}).write_text("")
"""])
  while not ready.exists():
    assert other.poll() is None
    time.sleep(0.01)
  assert f"pid {other.pid} " in lock.holder(claim)
  listing = [piece("train a"), piece("train b"), piece("evaluate a", ("train a",)),
             piece("evaluate b", ("train b",)), piece("evaluate c", locks=claim)]
  status = scheduler.schedule(lambda: listing, root, poll_s=0.1)
  assert other.wait() == 0 and lock.holder(claim) is None
  assert ran == ["train b", "evaluate b", "evaluate a", "evaluate c"]
  assert status == {"train a": "done", "train b": "done", "evaluate b": "done",
                    "evaluate a": "done", "evaluate c": "done"}

  ran.clear()
  listing = [piece("train c"), piece("train d"), piece("evaluate d", ("train d",))]
  status = scheduler.schedule(lambda: listing, root, index=0, count=2, poll_s=0.1)
  assert ran == ["train c"] and status == {"train c": "done",
                                           "evaluate d": "pending (needs train d)"}


def test_the_committed_report_and_the_readme_verdicts_are_what_the_committed_data_give():
  """results/fashion_mnist/REPORT.md is exactly what the report code makes of the committed JSON
  (no hand edit; a change to the analysis that would change it shows here), and the README's
  verdict lines are the report's headlines."""
  from uat_jax.report import claims as claims_lib, markdown, readme as readme_lib, view
  out = os.path.join(REPO, "results", "fashion_mnist")
  r = view.Results(os.path.join(out, "data"))
  fix = ("rebuild both: python -m uat_jax.report --from_data --out=results/fashion_mnist "
         "--readme=README.md")
  claims = claims_lib.claim_rows(r)
  with open(os.path.join(out, "REPORT.md")) as f:
    assert f.read() == markdown.markdown(r, claims) + "\n", fix
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  block = readme_lib.readme_block(claims)
  assert block.count("\n- **") == 5 and block in readme, fix


def test_the_readme_verdict_block_is_replaced_in_place_or_its_absence_named(tmp_path):
  from uat_jax.report import readme as report_lib
  readme = tmp_path / "README.md"
  begin, end = report_lib.README_BEGIN, report_lib.README_END
  readme.write_text(f"# x\n\nbefore\n{begin}\n- old\n{end}\nafter\n")
  report_lib.write_readme(str(readme), f"{begin}\n- new\n{end}")
  assert readme.read_text() == f"# x\n\nbefore\n{begin}\n- new\n{end}\nafter\n"
  readme.write_text("# x\n")
  with pytest.raises(UatError, match="has no verdict block: add the lines"):
    report_lib.write_readme(str(readme), f"{begin}\n{end}")
  assert readme.read_text() == "# x\n"
  with pytest.raises(UatError, match="cannot read the README .*: pass an existing file"):
    report_lib.write_readme(str(tmp_path / "missing.md"), f"{begin}\n{end}")


def test_a_study_takes_a_finished_sweeps_choice_from_sweep_from(tmp_path):
  """sweep_from: the choice of a finished sweep (the committed one of the Fashion-MNIST study)
  replaces the sweep runs: no sweep piece and no pending choice are listed, the final runs use
  the chosen values, ROOT/sweep.json carries the choice with its source and the report names
  it; a file that does not match the study's sweep, or is missing, is one line naming the fix."""
  from uat_jax import config as config_lib
  from uat_jax.report import markdown
  from uat_jax.study import pieces, spec
  s = config_lib.from_file("fashion_mnist_study")
  with open(os.path.join(REPO, s.sweep_from)) as f:
    committed = json.load(f)
  names = [p.name for p in pieces.pieces(s, str(tmp_path / "root"))]
  assert "choose" not in names and spec.sweep_runs(s) == []
  trained = [n for n in names if n.startswith("train ")]
  assert len(trained) == 5 * 3 + 3 * 3 + 3 * 2  # final runs and the ablation, no sweep run
  assert {"train at_entm_beta0.3_s0", "train at_ls_alpha0.1_s4", "train entm_beta0.3_s2",
          "train ls_alpha0.8_s1"} <= set(names)
  assert "train at_entm_beta1_s0" not in names
  written = json.loads((tmp_path / "root" / "sweep.json").read_text())
  assert {m: {k: v for k, v in e.items() if k != "source"} for m, e in written.items()} == committed
  assert {e["source"] for e in written.values()} == {s.sweep_from}

  class R:  # the report's view of the collected sweep
    sweep, study = written, {}
  assert f"Taken from the finished sweep in `{s.sweep_from}`" in "\n".join(
      markdown.sweep_section(R))

  wrong = json.loads(json.dumps(committed))
  wrong["at_ls"]["values"].pop("0.5")
  (tmp_path / "wrong.json").write_text(json.dumps(wrong))
  s.sweep_from = str(tmp_path / "wrong.json")
  with pytest.raises(UatError, match=r"for at_ls over \['0.1', '0.2'\], but the study sweeps "
                     r"regularizer.alpha over \['0.1', '0.2', '0.5'\]: point sweep_from"):
    pieces.pieces(s, str(tmp_path / "other"))
  s.sweep_from = str(tmp_path / "missing.json")
  with pytest.raises(UatError, match="does not exist: point sweep_from at the sweep.json"):
    pieces.pieces(s, str(tmp_path / "other"))


def test_robust_overfitting_is_pending_until_every_baseline_seed_is_trained(tmp_path):
  """The plan's robust-overfitting rule is over every final AT seed: with one seed untrained
  the report says pending (how many are trained), with all of them it applies the rule."""
  import shutil
  from uat_jax.report import claims, view
  data = tmp_path / "data"
  shutil.copytree(os.path.join(REPO, "results", "fashion_mnist", "data"), data)
  curve = [[39, 0.50], [1560, 0.74], [3120, 0.70]]  # 4 points below the best at the end
  for seed in range(5):
    path = data / "runs" / f"at_s{seed}.json"
    run = json.loads(path.read_text())
    run.pop("train", None)
    run["curves"] = ({"eval/pgd_accuracy": curve, "train/accuracy_adv": [[3120, 0.8]]}
                     if seed < 4 else {})
    path.write_text(json.dumps(run))
  text = claims.overfitting_text(claims.robust_overfitting(view.Results(str(data))))
  assert text == "Robust overfitting: pending (4 of the 5 AT seeds trained)."
  path = data / "runs" / "at_s4.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), "curves": {
      "eval/pgd_accuracy": curve, "train/accuracy_adv": [[3120, 0.8]]}}))
  ro = claims.robust_overfitting(view.Results(str(data)))
  assert ro["label"] == "occurred" and ro["drops"] == pytest.approx([-0.04] * 5)


@pytest.mark.parametrize("arg,message", [
    ("--study=cifar10_study:foo", "unknown study variant 'foo': use nothing or wrn"),
    ("--study=fashion_mnist_overfit_study", "unknown regime None: name the pilot's candidate, "
     "one of P1, P2, P3, P4 (e.g. fashion_mnist_overfit_study:P4)"),
    ("--study=nosuch_study", "config 'nosuch_study' is neither a file nor a packaged"),
])
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections' loader
def test_a_bad_study_argument_is_one_line(arg, message):
  """The study and report commands parse --study as the training command parses --config: a
  study config's own error (an unknown variant or regime) is one line (a UatError, which the
  command prints as `error: ...` with exit status 2: tests/test_main.py)."""
  from absl import flags
  from ml_collections import config_flags
  from uat_jax import cli
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("study", None, "", flag_values=flag_values)
  with pytest.raises(UatError) as error:
    cli.parse_flags(["prog", arg], "study", flag_values)
  assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_the_report_parses_its_flags_without_a_study():
  """`report --from_data` names no --study: the parser leaves the optional config flag unset."""
  from absl import flags
  from ml_collections import config_flags
  from uat_jax import cli
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("study", None, "", flag_values=flag_values)
  assert cli.parse_flags(["prog"], "study", flag_values) == ["prog"]
  assert flag_values.study is None


def test_only_selects_pieces_by_pattern_with_what_they_need(tmp_path):
  """--only: the pieces whose names match a pattern, with the training runs they need (the
  surrogate of an output with a transfer attack included, and only there), in listing order;
  matching nothing is one line."""
  from uat_jax import config as config_lib
  from uat_jax.study import pieces, scheduler
  s = config_lib.from_file("fashion_mnist_study")
  root = str(tmp_path / "root")
  listing = pieces.pieces(s, root)
  assert pieces.select(listing, "") == listing
  names = [p.name for p in pieces.select(listing, "evaluate at_ls_alpha0.1_s4 paper_last, "
                                                 "jacobian at_s1")]
  # at_ls seed 4's transfer surrogate is the method's next seed, wrapping round to seed 0.
  assert names == ["train at_s1", "train at_ls_alpha0.1_s0", "train at_ls_alpha0.1_s4",
                   "jacobian at_s1", "evaluate at_ls_alpha0.1_s4 paper_last"]
  # The strong preset (AutoAttack) runs no transfer attack: its own run alone.
  names = [p.name for p in pieces.select(listing, "evaluate at_ls_alpha0.1_s4 strong_last")]
  assert names == ["train at_ls_alpha0.1_s4", "evaluate at_ls_alpha0.1_s4 strong_last"]
  with pytest.raises(UatError, match="matches no piece of the study"):
    scheduler.run(s, root, only="evaluate nothing *")


def test_merge_admits_only_runs_that_repeat_and_the_convergence_check_reads_them(tmp_path):
  """report --merge (plan amendment 8, v3.3): a run trained again whose curves equal the
  committed run's gets its new outputs added (nothing replaced), one whose curves differ at one
  step is refused with that step, a new study output joins study.json, a changed one is refused;
  the convergence check then compares the worst case with and without the checked output, on
  the seeds the output names, and stays pending while any checked run lacks it."""
  import shutil
  from uat_jax import masks
  from uat_jax.report import convergence, merge, view
  data, fresh = tmp_path / "data", tmp_path / "fresh"
  shutil.copytree(os.path.join(REPO, "results", "fashion_mnist", "data"), data)
  (fresh / "runs").mkdir(parents=True)
  study = json.loads((data / "study.json").read_text())
  for name in [o for o, e in study["evals"].items() if e.get("worst_case") is False]:
    del study["evals"][name]  # as the committed data were before the check was planned
  (data / "study.json").write_text(json.dumps(study))
  new_study = json.loads(json.dumps(study))
  new_study["evals"]["check"] = {**study["evals"]["strong"], "eps": [0.2], "seeds": [0, 1],
                                 "worst_case": False, "eps_by_method": {
                                     m: [] for m in ("standard", "entm", "ls")}}
  (fresh / "study.json").write_text(json.dumps(new_study))
  run = lambda d, name: json.loads((d / "runs" / f"{name}.json").read_text())
  for name, change in (("at_s0", None), ("at_s1", 7)):
    again = run(data, name)
    if change is not None:
      curve = again["curves"]["eval/pgd_accuracy"]
      curve[change] = [curve[change][0], curve[change][1] + 0.001]
    check = json.loads(json.dumps(again["evals"]["strong"]))
    worst = masks.unpack(check["masks"]["worst"]["0.2"]).copy()
    robust = np.flatnonzero(worst)[:12]
    worst[robust] = 0  # the check breaks 12 of the 2,000 images the worst case left robust
    check["masks"]["worst"] = {"0.2": masks.pack(worst)}
    again["evals"]["check"] = check
    again["evals"]["strong"] = "replaced?"  # present in the committed run: never replaced
    (fresh / "runs" / f"{name}.json").write_text(json.dumps(again))
  done = merge.merge(str(fresh), str(data))
  assert done["admitted"] == ["at_s0"] and done["added"] == ["study output check", "at_s0 check"]
  step = run(data, "at_s1")["curves"]["eval/pgd_accuracy"][7][0]
  assert done["refused"] == [f"at_s1: its training does not repeat the committed run "
                             f"(eval/pgd_accuracy at step {step}: "
                             f"{run(fresh, 'at_s1')['curves']['eval/pgd_accuracy'][7][1]!r} "
                             f"instead of {run(data, 'at_s1')['curves']['eval/pgd_accuracy'][7][1]!r})"]
  assert run(data, "at_s0")["evals"]["strong"] != "replaced?"
  assert "check" not in run(data, "at_s1")["evals"]

  r = view.Results(str(data))
  assert r.planned(run(data, "at_s2"), 0.2, checks=True) == []  # seeds 0-1 only
  c = convergence.check(r)
  # at_s0 checked (a 12-image drop: 0.6 points, over the 0.5-point rule); at_s1 and seeds 0-1
  # of AT+EntM and AT+LS pending.
  assert c["pending"] == 5 and [row[:3] for row in c["rows"]] == [("at", 0, 0.2)]
  assert c["rows"][0][-1] == pytest.approx(12 / 2000) and c["label"] == "not converged"
  assert "worst case not converged" in convergence.qualifier(c)

  changed = json.loads(json.dumps(new_study))
  changed["evals"]["strong"]["eps"] = [0.3]
  (fresh / "study.json").write_text(json.dumps(changed))
  with pytest.raises(UatError, match="output strong is specified differently"):
    merge.merge(str(fresh), str(data))


def test_the_v3_pilot_rule_and_its_configs():
  """The v3 pilot (plan v3.4): the smoothed drop is the peak of the 3-evaluation moving average
  minus the mean of the last 3; a candidate overfits when every seed drops at least 3 points;
  every candidate's config validates, validates every 5% of training on 5,000 held-out images
  with APGD-CE and keeps its best checkpoint by that."""
  from uat_jax import validation
  from uat_jax.study import pilot
  rise = [[s, v] for s, v in enumerate([0.5, 0.6, 0.7, 0.72, 0.74, 0.75])]
  assert pilot.smoothed_drop(rise) == pytest.approx(0.0)
  peak = [[s, v] for s, v in enumerate([0.5, 0.7, 0.8, 0.76, 0.8, 0.7, 0.72, 0.71, 0.7])]
  # Moving averages 0.667, 0.753, 0.787, 0.753, 0.74, 0.71, 0.71: peak 0.7867, end 0.71.
  assert pilot.smoothed_drop(peak) == pytest.approx((0.8 + 0.76 + 0.8) / 3 - 0.71)
  with pytest.raises(UatError, match="at least 3 evaluations"):
    pilot.smoothed_drop(peak[:2])
  for name, (model, size, steps, eps) in pilot.V3_CANDIDATES.items():
    c = pilot.v3_config(name, 1)
    validation.validate(c, 1)
    every = c.evals.suite.every_steps
    assert steps % 20 == 0 and every * 20 == steps and c.checkpoint_every_steps == every
    assert (c.model.name, c.data.train_size, c.data.validation_size) == (model, size, 5000)
    assert c.best_checkpoint.metric == pilot.v3_metric(eps) == f"suite/worst_case@{eps:g}"
    assert c.attack.step_size == pytest.approx(eps / 4) and c.seed == 1


def test_the_v3_pilot_outcome_reads_both_seeds_curves(tmp_path):
  from uat_jax.study import pilot
  steps = [156 * (i + 1) for i in range(20)]
  for seed, values in ((0, [0.5 + 0.01 * i for i in range(10)] + [0.55] * 10),
                       (1, [0.5 + 0.01 * i for i in range(10)] + [0.58] * 10)):
    w = tmp_path / f"P1_s{seed}"
    w.mkdir()
    w.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "suite/worst_case@0.1": v}) + "\n" for s, v in zip(steps, values)))
  out = pilot.v3_outcome(str(tmp_path), "P1")
  # Seed 0: peak of the moving average 0.58 (0.57, 0.58, 0.59), end 0.55: 3 points. Seed 1:
  # peak 0.5833 (0.58, 0.59, 0.58), end 0.58: a third of a point.
  assert [s["drop"] for s in out["seeds"].values()] == pytest.approx([0.03, 0.01 / 3])
  assert out["overfits"] is False and out["regime"]["train_size"] == 2000
  with pytest.raises(UatError, match="has not finished: rerun launch/study_v3.sh"):
    pilot.v3_outcome(str(tmp_path), "P2")
  # The report's pilot section, from OUT/data/pilot_v3.json.
  import shutil
  from uat_jax.report import markdown, view
  data = tmp_path / "data"
  shutil.copytree(os.path.join(REPO, "results", "fashion_mnist", "data"), data)
  (data / "pilot_v3.json").write_text(json.dumps(
      {"rule": "every seed's smoothed drop >= 0.03", "candidates": {"P1": out}, "chosen": None}))
  section = "\n".join(markdown.pilot_section(view.Results(str(data))))
  assert "| P1 | small_cnn | 2,000 | 3,120 | 0.1 | 3.0, 0.3 | no |" in section
  assert "No candidate so far meets the rule" in section
  # A resumed pilot keeps the outcomes written before (same rule) until it recomputes them.
  rule = "every seed's smoothed drop >= 0.03"
  assert pilot.v3_known(str(data / "pilot_v3.json"), rule) == {"P1": out}
  assert pilot.v3_known(str(data / "pilot_v3.json"), "another rule") == {}
  assert pilot.v3_known(str(tmp_path / "none.json"), rule) == {}
  # Every candidate run, none chosen: the plan's final outcome.
  (data / "pilot_v3.json").write_text(json.dumps(
      {"rule": rule, "candidates": {n: out for n in pilot.V3_CANDIDATES}, "chosen": None}))
  section = "\n".join(markdown.pilot_section(view.Results(str(data))))
  assert "robust overfitting could not be induced on Fashion-MNIST within these budgets, " \
         "and no study" in section and "so far" not in section


REGIME = ("model.name", "data.train_size", "data.validation_size", "num_train_steps",
          "attack.eps", "attack.step_size", "attack.steps", "optimizer.name",
          "optimizer.learning_rate", "optimizer.momentum", "optimizer.weight_decay",
          "optimizer.boundaries", "evals.suite.every_steps", "evals.suite.num_examples")


def test_the_overfit_study_runs_v35_in_the_pilots_regime(monkeypatch):
  """fashion_mnist_overfit_study:<candidate> (plan v3.5): AT, AT+EntM, AT+LS and the control
  AT+WA with seeds 0-7, standard, EntM and LS with 0-4, the committed sweep's choice, no
  ablation; every run in the pilot's regime for that candidate (the same training settings as
  the pilot's run), best and last checkpoints at the training eps and twice it on 5,000 test
  images, the last-vs-best estimand."""
  from flax import traverse_util
  from uat_jax import validation
  from uat_jax import config as config_lib
  from uat_jax.study import pilot, spec, sweep
  monkeypatch.chdir(REPO)  # sweep_from is the committed sweep, relative to the repository
  s = config_lib.from_file("fashion_mnist_overfit_study", "P3")
  runs = spec.final_runs(s, sweep.pinned_choice(s)) + spec.ablation_runs(s, {})
  assert spec.sweep_runs(s) == [] and s.estimand == "last_vs_best"
  assert sorted(r.name for r in runs if r.seed == 0) == [
      "at_entm_beta0.3_s0", "at_ls_alpha0.1_s0", "at_s0", "at_wa_s0", "entm_beta0.3_s0",
      "ls_alpha0.8_s0", "standard_s0"]
  assert len(runs) == 4 * 8 + 3 * 5
  flat = lambda config: traverse_util.flatten_dict(config.to_dict(), sep=".")  # noqa: E731
  reference = flat(pilot.v3_config("P3", 0))
  for r in runs:
    validation.validate(r.config, 1)
    c = r.config
    assert {k: flat(c)[k] for k in REGIME} == {k: reference[k] for k in REGIME}, r.name
    assert c.optimizer.weight_average == (0.999 if r.method == "at_wa" else 0.0)
    assert c.best_checkpoint.metric == (
        "suite/worst_case@0.15" if r.method.startswith("at") else "suite/clean_accuracy")
    for output in ("paper", "strong", "adaptive", "paper_last", "strong_last", "adaptive_last"):
      e = c.evals[output]
      assert tuple(e.eps) == pytest.approx((0.15, 0.3)) and e.num_examples == 5000
  with pytest.raises(UatError, match="unknown regime 'P9'"):
    config_lib.from_file("fashion_mnist_overfit_study", "P9")


def test_the_last_versus_best_estimand_is_the_paired_difference_in_gain(tmp_path):
  """A study with estimand last_vs_best (plan v3.5, the accelerator grids): claim 1's primary
  comparison is the mean over seeds and images of (M - AT at the last checkpoint) - (M - AT at
  the best), from the same masks as the per-checkpoint gains. The weight-averaging control
  (plan v3.11; here AT+EntM's runs stand in for it) is reported beside, unlabelled, with its own
  last-vs-best estimand and each method minus it at the last checkpoint."""
  import shutil
  from uat_jax.report import claims, view
  from uat_jax.report.formatting import ci
  data = tmp_path / "data"
  shutil.copytree(os.path.join(REPO, "results", "fashion_mnist", "data"), data)
  study = json.loads((data / "study.json").read_text())
  (data / "study.json").write_text(json.dumps(
      {**study, "estimand": "last_vs_best", "methods": study["methods"] + ["at_wa"]}))
  for seed in range(5):
    run = json.loads((data / "runs" / f"at_entm_beta0.3_s{seed}.json").read_text())
    (data / "runs" / f"at_wa_s{seed}.json").write_text(json.dumps(
        {**run, "name": f"at_wa_s{seed}", "method": "at_wa"}))
  r = view.Results(str(data))
  gain = {cp: r.paired(r.final["at_ls"], r.final["at"], "worst", 0.2, cp)["per_seed"]
          for cp in ("best", "last")}
  e = claims.last_vs_best(r, "at_ls", "at", 0.2)
  assert e.estimate == pytest.approx(np.mean(np.subtract(gain["last"], gain["best"])))
  assert claims.last_vs_best(r, "at_ls", "at", 0.1) is None  # no last checkpoint at eps 0.1
  assert claims.claim_rows(r)[0]["claim"].startswith("1. AT+EntM and AT+LS keep a gain")
  r.train_eps = 0.2  # the estimand's eps: the committed data have last checkpoints at 0.2 only
  row = claims.claim_rows(r)[0]
  own = claims.last_vs_best(r, "at_entm", "at", 0.2).interval()
  versus = r.paired(r.final["at_ls"], r.final["at_wa"], "worst", 0.2, "last")["interval"]
  assert (f"AT+WA - AT at the last checkpoint minus at the best, eps 0.2: {ci(own)}"
          in row["text"])
  assert f"AT+LS - AT+WA, last checkpoint, eps 0.2: {ci(versus)}" in row["text"]
  assert "AT+WA" not in row["label"]  # unlabelled: outside the Holm family
