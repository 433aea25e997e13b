"""The evaluation suite on a model trained on real Fashion-MNIST, and its masking checks."""

import json

import jax
import numpy as np
import pytest

from tests import helpers
from tests.helpers import load_config
from uat_jax import attacks, evaluate, models
from uat_jax.evaluate import checks
from uat_jax.errors import UatError

EPS = (0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def trained(trained_model, small_fmnist):
  """(logits_fn, x, y): the trained model and 200 real test points."""
  model, variables = trained_model
  logits_fn = models.classifier(model, variables)
  x = small_fmnist["test"].images[:200].astype(np.float32) / 255
  return logits_fn, x, small_fmnist["test"].labels[:200]


@pytest.fixture(scope="module")
def quick(trained):
  logits_fn, x, y = trained
  return evaluate.run_suite(logits_fn, x, y, evaluate.preset("quick"), jax.random.PRNGKey(0),
                            eps=EPS, batch_size=128).to_json(masks=False)


def test_quick_suite_structure_and_ordering(quick):
  assert quick["num_examples"] == 200 and quick["clean_accuracy"] > 0.6
  acc = {name: r["accuracy"] for name, r in quick["attacks"].items()}
  assert list(acc) == ["FGSM", "PGD-20", "CW-20"]
  for k in map(str, EPS):
    assert acc["PGD-20"][k] <= acc["FGSM"][k] + checks.TOLERANCE
    worst = quick["worst_case"]["accuracy"][k]
    assert worst <= min(a[k] for a in acc.values())
    cumulative = [quick["worst_case"]["cumulative"][n][k] for n in acc]
    assert cumulative == sorted(cumulative, reverse=True) and cumulative[-1] == worst
  assert quick["extra"]["eps0_accuracy"] == quick["clean_accuracy"]
  # A standard model is not robust: PGD at eps 0.2 breaks nearly everything.
  assert acc["PGD-20"]["0.2"] < 0.1


def test_checks_pass_on_an_honest_model(quick):
  failed = [c for c in quick["checks"] if not c["passed"]]
  assert not failed, failed
  table = evaluate.format_table(quick)
  assert "| PGD-20 | white-box |" in table and "**worst case**" in table and "[pass]" in table


def test_saturated_logits_are_flagged_and_margin_attacks_still_break_them(trained):
  logits_fn, x, y = trained
  saturated = lambda v: 1e4 * logits_fn(v)  # softmax saturates: CE input gradients vanish
  r = evaluate.run_suite(saturated, x, y, evaluate.preset("quick"), jax.random.PRNGKey(0),
                         eps=EPS, batch_size=128).to_json(masks=False)
  checks = {c["name"]: c for c in r["checks"]}
  assert not checks["few examples with vanishing gradients"]["passed"]
  assert not checks["CW-20 not far below PGD-20 (CE gradients not masked)"]["passed"]
  acc = {name: v["accuracy"] for name, v in r["attacks"].items()}
  assert acc["CW-20"]["0.2"] < 0.1  # the margin loss breaks it
  assert acc["PGD-20"]["0.1"] > acc["CW-20"]["0.1"] + 0.2  # CE-PGD overestimates robustness


def test_bad_suites():
  f = lambda v: v.reshape(v.shape[0], -1)[:, :10]
  x, y = np.zeros((4, 4, 4, 1), np.float32), np.zeros(4, np.int32)
  with pytest.raises(UatError, match="unknown evaluation preset"):
    evaluate.preset("strongest")
  with pytest.raises(UatError, match="unknown attack"):
    evaluate.run_suite(f, x, y, [{"attack": "bim"}], jax.random.PRNGKey(0), eps=0.1)
  with pytest.raises(UatError, match="outside \\[0, 1\\]"):
    evaluate.run_suite(f, x, y, evaluate.preset("quick"), jax.random.PRNGKey(0), eps=(2.0,))


def test_apgd_and_fab_at_most_pgd_and_square_breaks_an_undefended_model(trained):
  """Through run_suite's entries (their parity with torchattacks: tests/test_interop.py)."""
  logits_fn, x, y = trained
  x, y = x[:100], y[:100]
  suite = [{"name": "PGD-20", "attack": "pgd"},  # rolled APGD loops: far quicker to compile
           {"name": "APGD-CE-20", "attack": "apgd", "steps": 20, "unroll": 1},
           {"name": "APGD-T-20", "attack": "apgd_t", "steps": 20, "num_targets": 3, "unroll": 1},
           {"name": "FAB-T-20", "attack": "fab_t", "steps": 20, "num_targets": 3},
           {"name": "Square-300", "attack": "square", "queries": 300}]
  r = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(1), eps=(0.1, 0.3),
                         batch_size=100, checks=False).to_json(masks=False)
  acc = {name: v["accuracy"] for name, v in r["attacks"].items()}
  for k in ("0.1", "0.3"):  # same points; slack for random starts (1 point of 100)
    assert acc["APGD-CE-20"][k] <= acc["PGD-20"][k] + 0.01
    assert acc["APGD-T-20"][k] <= acc["PGD-20"][k] + 0.01
    # FAB-T breaks no fewer points than PGD-20 (measured: 0.135 vs 0.140 at eps 0.1, 0 vs 0 at
    # 0.3; with 9 targets instead of 3 the same).
    assert acc["FAB-T-20"][k] <= acc["PGD-20"][k], acc
  assert acc["Square-300"]["0.1"] < r["clean_accuracy"] - 0.3  # no gradients, still strong

  assert acc["Square-300"]["0.3"] <= 0.05


def test_only_robust_attacks_the_survivors_and_a_rerun_resumes_from_the_store(trained, tmp_path,
                                                                            monkeypatch):
  logits_fn, x, y = trained
  x, y = x[:100], y[:100]
  suite = [{"name": "FGSM", "attack": "fgsm"}, {"name": "PGD-5", "attack": "pgd", "steps": 5},
           {"name": "Square-30", "attack": "square", "queries": 30}]
  kw = dict(eps=(0.03, 0.1), batch_size=64, only_robust=True)
  store = evaluate.ResultStore(str(tmp_path), {"model": "trained", "n": 100})
  r1 = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(2), store=store,
                          **kw).to_json()
  for k in ("0.03", "0.1"):
    fgsm_left = round(r1["attacks"]["FGSM"]["cumulative"][k] * 100)
    assert r1["attacks"]["PGD-5"]["attacked"][k] == fgsm_left
    assert r1["attacks"]["FGSM"]["attacked"][k] == round(r1["clean_accuracy"] * 100)
  assert "accuracy" in r1["attacks"]["FGSM"] and "accuracy" not in r1["attacks"]["PGD-5"]
  names = [c["name"] for c in r1["checks"]]
  assert "black-box Square-30 breaks few points white-box attacks missed" in names

  calls = []
  real = evaluate._correct
  monkeypatch.setattr(evaluate, "_correct", lambda *a, **k: calls.append(1) or real(*a, **k))
  r2 = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(2), store=store,
                          **kw).to_json()
  assert len(calls) == 1  # only the clean pass: every attack and check came from the store
  for r in (r1, r2):
    for v in r["attacks"].values():
      v.pop("seconds")
    r["provenance"].pop("date")
  assert r1 == r2


def test_transfer_from_a_surrogate_and_skipped_without_one(trained):
  logits_fn, x, y = trained
  x, y = x[:100], y[:100]
  suite = [{"name": "PGD-10", "attack": "pgd", "steps": 10},
           {"name": "Transfer", "attack": "transfer", "steps": 10}]
  r = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(0), eps=(0.1,),
                         batch_size=100, surrogates={"surrogate": logits_fn},
                         checks=False).to_json(masks=False)
  acc = {name: v["accuracy"]["0.1"] for name, v in r["attacks"].items()}
  # The model as its own surrogate: transfer is white-box PGD with another random start.
  assert abs(acc["Transfer"] - acc["PGD-10"]) <= 0.03
  r = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(0), eps=(0.1,),
                         batch_size=100).to_json(masks=False)
  assert list(r["attacks"]) == ["PGD-10"] and r["skipped"][0]["name"] == "Transfer"
  assert "skipped Transfer" in evaluate.format_table(r)


def test_fgsm_and_pgd_match_foolbox(trained_model, trained):
  """Parity with an independent implementation: Foolbox 3's JAX attacks (the `test` extra)."""
  fb = pytest.importorskip("foolbox")
  model, variables = trained_model
  _, x, y = trained
  # The model computes in float64, so the two implementations' input gradients (each its own
  # CE, summed in its own order) differ by float64 rounding, far too little to flip the sign of
  # a gradient that is not exactly zero. Logits / 4 keeps the softmax off saturation, where
  # 1 - p_y itself would be rounding noise. Images stay float32 in both.
  model64 = model.clone(dtype=jax.numpy.float64)
  with jax.enable_x64(True):
    logits_fn = lambda v: model64.apply(variables, v, train=False) / 4
    x, y = jax.numpy.asarray(x[:128]), jax.numpy.asarray(y[:128])
    fmodel = fb.JAXModel(logits_fn, bounds=(0, 1))
    ours = {
        "FGSM": attacks.fgsm(logits_fn, x, y, eps=0.1),
        "PGD-10": attacks.pgd(logits_fn, x, y, key=jax.random.PRNGKey(0), eps=0.1,
                              step_size=0.025, steps=10, random_start=False),
    }
    theirs = {
        "FGSM": fb.attacks.FGSM(random_start=False),
        "PGD-10": fb.attacks.LinfPGD(abs_stepsize=0.025, steps=10, random_start=False),
    }
    for name, attack in theirs.items():
      _, x_fb, success = attack(fmodel, x, y, epsilons=0.1)
      # Same signs, so the same steps; each of the <= 10 float32 roundings of x + step moves a
      # pixel by at most ulp(1) = 2^-23 (1.2e-6 in all).
      np.testing.assert_allclose(np.asarray(ours[name]), np.asarray(x_fb), rtol=0,
                                 atol=10 * 2.0 ** -23, err_msg=name)
      acc_ours = float(np.mean(np.asarray(jax.numpy.argmax(logits_fn(ours[name]), -1)) == y))
      acc_fb = 1.0 - float(np.mean(np.asarray(success)))
      assert abs(acc_ours - acc_fb) <= 1 / 128, (name, acc_ours, acc_fb)  # a near-tie at most


@pytest.mark.slow
def test_evaluation_batches_over_8_devices_without_recompiling():
  proc = helpers.run_program("mesh_eval")  # tests/programs/mesh_eval.py
  assert "mesh ok" in proc.stdout
  counts = [int(line.split()[-1]) for line in proc.stdout.splitlines() if "traces" in line]
  # Far fewer traces than (batches x eps) per attack; on 8 devices at most as many as on 1 (a
  # program whose inputs are laid out alike is kept from the first run), and none when the same
  # suite runs again on 1 device with a new Partial of the same model.
  assert counts[0] < 4 * 3 and counts[1] <= counts[0] and counts[2] == 0, proc.stdout


def test_adaptive_entries_use_the_models_own_objective(trained):
  from uat_jax import losses
  logits_fn, x, y = trained
  x, y = x[:64], y[:64]
  suite = [{"name": "PGD-5-objective", "attack": "pgd", "steps": 5, "loss": "objective"},
           {"name": "PGD-5-T0.1", "attack": "pgd", "steps": 5, "temperature": 0.1}]
  with pytest.raises(UatError, match="no training objective was given"):
    evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(0), eps=(0.1,))
  # With the standard method the objective is plain CE: the same attack as loss "ce".
  as_ce = evaluate.run_suite(logits_fn, x, y, suite[:1], jax.random.PRNGKey(0), eps=(0.1,),
                             objective=losses.per_example_objective(load_config("standard")),
                             checks=False).to_json(masks=False)
  ce = evaluate.run_suite(logits_fn, x, y, [{**suite[0], "loss": "ce"}], jax.random.PRNGKey(0),
                          eps=(0.1,), checks=False).to_json(masks=False)
  assert as_ce["attacks"]["PGD-5-objective"]["accuracy"] == ce["attacks"]["PGD-5-objective"][
      "accuracy"]
  entm = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(0), eps=(0.1,),
                            objective=losses.per_example_objective(load_config("entm")),
                            checks=False).to_json(masks=False)
  acc = {n: v["accuracy"]["0.1"] for n, v in entm["attacks"].items()}
  assert acc["PGD-5-objective"] < entm["clean_accuracy"]
  assert acc["PGD-5-objective"] != as_ce["attacks"]["PGD-5-objective"]["accuracy"]["0.1"]
  assert acc["PGD-5-T0.1"] < entm["clean_accuracy"] - 0.2
  with pytest.raises(UatError, match="unknown parameter"):
    evaluate.run_suite(logits_fn, x, y, [{"attack": "square", "steps": 5}], jax.random.PRNGKey(0),
                       eps=0.1)
  with pytest.raises(UatError, match="mix"):
    evaluate.run_suite(logits_fn, x, y, [{"attack": "pgd"}, {"attack": "pgd", "norm": "l2",
                                                             "name": "l2"}],
                       jax.random.PRNGKey(0), eps=0.1)


def test_typed_result_masks_json_scalar_eps_and_adversarial_examples(trained):
  logits_fn, x, y = trained
  x, y = x[:64], y[:64]
  suite = [{"name": "FGSM", "attack": "fgsm"}, {"name": "PGD-5", "attack": "pgd", "steps": 5}]
  r = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(0), eps=0.1, batch_size=32,
                         checks=False, return_adversarial=True)
  assert isinstance(r, evaluate.SuiteResult) and r.eps == (0.1,)
  for name, a in r.attacks.items():
    assert a.accuracy[0.1] == a.robust[0.1].mean()  # the per-example mask gives the accuracy
    x_adv = a.adversarial[0.1]
    assert x_adv.shape == x.shape and np.abs(x_adv - x).max() <= 0.1 + 1e-6
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    # The adversarial images are what was scored: robust exactly where still classified right.
    predicted = np.asarray(jax.numpy.argmax(logits_fn(x_adv), -1))
    np.testing.assert_array_equal(predicted == y, a.robust[0.1], err_msg=name)
  np.testing.assert_array_equal(
      r.worst[0.1], r.clean & r.attacks["FGSM"].robust[0.1] & r.attacks["PGD-5"].robust[0.1])
  back = evaluate.SuiteResult.from_json(json.loads(json.dumps(r.to_json())))
  np.testing.assert_array_equal(back.worst[0.1], r.worst[0.1])
  np.testing.assert_array_equal(back.attacks["PGD-5"].robust[0.1], r.attacks["PGD-5"].robust[0.1])
  assert back.worst_case_accuracy == r.worst_case_accuracy and back.clean_accuracy == (
      r.clean_accuracy)
  # Inputs a suite cannot score honestly fail with one clear error.
  for bad_x, bad_y, message in ((x * 255, y, "divide 0-255 images by 255"),
                                ((x * 255).astype(np.uint8), y, "must be float in \\[0, 1\\]"),
                                (x, y[:10], "labels must be 64 integers")):
    with pytest.raises(UatError, match=message):
      evaluate.run_suite(logits_fn, bad_x, bad_y, suite, eps=0.1)
    with pytest.raises(UatError, match=message):
      attacks.pgd(logits_fn, bad_x, bad_y, key=jax.random.PRNGKey(0), eps=0.1, step_size=0.01,
                  steps=1)


def test_attacks_picked_one_by_one_from_the_command_line():
  c = load_config("at")
  c.evals.suite.preset = ""
  c.evals.suite.select = "apgd_ce,apgd_dlr"  # what --config.evals.suite.select=... sets
  from uat_jax import validation
  entries, _ = evaluate.resolve_suite(evaluate.suite_entries(c.evals.suite))
  assert [(e["name"], e["attack"], e["loss"]) for e in entries] == [
      ("APGD-CE", "apgd", "ce"), ("APGD-DLR", "apgd", "dlr")]
  c.evals.suite.preset = "quick"
  assert [e["name"] for e in evaluate.suite_entries(c.evals.suite)] == [
      "FGSM", "PGD-20", "CW-20", "APGD-CE", "APGD-DLR"]
  c.evals.suite.select = "apgd_ce,bim"
  with pytest.raises(UatError, match="unknown attack name\\(s\\) \\['bim'\\]"):
    validation.validate(c)


def test_square_on_the_still_robust_points_matches_square_on_all(trained):
  """Square run on the still-robust points only (every 20 queries) or on the whole batch
  throughout: the same search with other random draws, so the same accuracy up to sampling
  noise (3 sigma of a difference of two binomial proportions on 200 points)."""
  logits_fn, x, y = trained
  suite = [{"name": "compacted", "attack": "square", "queries": 100, "segment": 20},
           {"name": "whole", "attack": "square", "queries": 100, "segment": 0}]
  r = evaluate.run_suite(logits_fn, x, y, suite, jax.random.PRNGKey(1), eps=0.1,
                         batch_size=100, checks=False)
  p = r.attacks["whole"].accuracy[0.1]
  assert r.attacks["compacted"].accuracy[0.1] < r.clean_accuracy - 0.2  # it does attack
  assert abs(r.attacks["compacted"].accuracy[0.1] - p) <= 3 * np.sqrt(2 * p * (1 - p) / 200)


def test_the_suite_eta_counts_every_piece_left_at_each_attacks_measured_cost():
  """The ETA from the second batch on (the first holds the compilation), an untimed attack at
  the timed ones' cost per gradient pass times its own passes, pieces of only_robust at their
  points; the same with the bar off (a disabled tqdm bar counts nothing, so the counts are the
  progress object's own)."""
  from uat_jax.evaluate import presets, progress
  for show in (False, True):
    p = progress.SuiteProgress([("A", 0.1), ("A", 0.2), ("B", 0.1)], 100, show,
                               points_for=lambda eps: 40 if eps == 0.1 else 100)
    assert p.eta_text() == "not yet timed"
    p.start("A", 0.1, 100)
    p.batch(50, 5.0)  # compilation included: counted only while it is the only batch
    assert p.eta() == pytest.approx(50 * 0.1 + 100 * 0.1 + 40 * 0.1)
    p.batch(50, 1.0)
    p.finish()
    # A at 1 s / 50 points; B untimed, at A's cost; B's eps-0.1 piece on its 40 points.
    assert p.eta() == pytest.approx(100 * 0.02 + 40 * 0.02)
    assert p.eta_text() == "~3s (1 attack estimated from the others)"
    p.start("A", 0.2, 60)  # fewer points than planned
    p.finish()  # loaded from a store: no batch timed, the points count
    assert (p.done, p.total) == (160, 260)
    p.close()
  # Untimed attacks scale by their gradient passes per point (SPSA-100 ~85x PGD-100).
  spsa, pgd = (presets.named([k])[0] for k in ("spsa", "pgd100"))
  assert (presets.passes(pgd), presets.passes(spsa)) == (100, pytest.approx(100 * 2 * 128 / 3))
  assert all(presets.passes(e) > 0 for e in presets.NAMED.values())
  p = progress.SuiteProgress([("A", 0.1), ("B", 0.1)], 100, False, points_for=lambda eps: 100,
                             passes={"A": presets.passes(pgd), "B": presets.passes(spsa)})
  p.start("A", 0.1, 100)
  p.batch(50, 1.0)
  p.batch(50, 1.0)
  p.finish()
  assert p.eta() == pytest.approx(100 * 0.02 * 256 / 3)  # B: 100 points at 85.3x A's cost
