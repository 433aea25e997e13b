"""PyTorch interop (uat_jax.interop): ports and twins with equal logits, the generic bridge
against torchattacks' PGD, and the attack suite's APGD-CE, APGD-T, FAB-T and Square against
torchattacks' implementations on the same weights. Skipped without torch (the `torch` extra)."""

import jax
import numpy as np
import pytest
from scipy import stats

from uat_jax import attacks
from uat_jax.errors import UatError

torch = pytest.importorskip("torch")
torchattacks = pytest.importorskip("torchattacks")
from uat_jax import interop  # noqa: E402
from uat_jax.interop import torch_models  # noqa: E402

EPS = 0.1  # the adversarially trained model below keeps about half its points at this radius


def _randomize_batch_norm(module):
  """Running statistics and affine parameters away from their defaults, so a port that mixed
  them up would show."""
  g = torch.Generator().manual_seed(0)
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0),
                        (m.weight.data, 0.5, 1.5), (m.bias.data, -0.2, 0.2)):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
  return module.eval()


def _torch_logits(module, x):
  with torch.no_grad():
    return module(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def test_ports_and_twins_give_the_same_logits():
  """from_torch ports a WideResNet-10-2 (normalization inside, batch-norm statistics and affine
  parameters random: the pre-activation blocks the PreAct ResNet-18 shares), DeepMind's
  WideResNet-10-2 with Swish (TensorFlow-SAME strided convolutions, normalization buffers), the
  post-activation ResNet-18 and the two CNNs with logits equal within 1e-4 (relative); to_torch
  gives back modules equal within 1e-5.
  (docs/own_model.md, run by the next test, ports a PreAct ResNet-18 and a WRN-28-10, exports
  the ResNet back, and runs the suite and the Jacobians on it.)"""
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  cases = [(torch_models.WideResNet(depth=10, widen_factor=2, mean=(0.49, 0.48, 0.45),
                                    std=(0.25, 0.24, 0.26)), (32, 32, 3), "wide_resnet"),
           (torch_models.DMWideResNet(depth=10, width=2, activation="swish",
                                      mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)),
            (32, 32, 3), "dm_wide_resnet"),
           (torch_models.ResNet18(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)),
            (32, 32, 3), "resnet18"),
           (torch_models.SmallCNN(), (28, 28, 1), "small_cnn"),
           (torch_models.MadryCNN(in_ch=3, image_size=32), (32, 32, 3), "madry_cnn")]
  for module, shape, arch in cases:
    module = _randomize_batch_norm(module)
    clf = interop.from_torch(module, input_shape=shape)
    assert clf.arch == arch
    x = rng.uniform(size=(2, *shape)).astype(np.float32)
    ref = _torch_logits(module, x)
    scale = np.abs(ref).max()
    # float32 convolutions in two libraries, accumulated in other orders: relative 1e-4 is
    # about 1,000 float32 roundings (2^-23 each) at the logits' scale.
    np.testing.assert_allclose(np.asarray(clf(x)) / scale, ref / scale, rtol=0, atol=1e-4)
    back = interop.to_torch(clf)  # torch -> Flax -> torch: the twin computes as the original
    assert type(back) is type(module)
    np.testing.assert_allclose(_torch_logits(back, x) / scale, ref / scale, rtol=0, atol=1e-5)
  dm = cases[1][0]
  # Weights alone do not say the activation; a ReLU port of the Swish model would be wrong.
  with pytest.raises(UatError, match="activation is not in its weights: pass activation="):
    interop.from_torch(dm.state_dict())
  x = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
  ref = _torch_logits(dm, x)
  np.testing.assert_allclose(
      np.asarray(interop.from_torch(dm.state_dict(), activation="swish")(x)) / np.abs(ref).max(),
      ref / np.abs(ref).max(), rtol=0, atol=1e-4)
  with pytest.raises(UatError, match="not a wide_resnet"):
    interop.from_torch(torch_models.SmallCNN().state_dict(), arch="wide_resnet")
  wrong = torch_models.SmallCNN(mean=(0.5,), std=(0.25,))
  with pytest.raises(UatError, match="differ from the torch module's"):  # normalization unseen
    interop.from_torch(wrong, mean=(), std=(), input_shape=(28, 28, 1))


@pytest.mark.slow
def test_the_own_model_page_runs():
  """docs/own_model.md's blocks, in order, in one namespace: a linen and an nnx classifier under
  the attacks, the suite and the Jacobians; a PreAct ResNet-18 ported (its logits checked by
  from_torch against the module's) with the quick suite; a bridged module
  under PGD; a RobustBench-layout WideResNet-28-10 ported; AutoAttack on a to_torch twin."""
  import os
  from tests.helpers import REPO
  with open(os.path.join(REPO, "docs", "own_model.md")) as f:
    text = f.read()
  blocks = [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]
  assert len(blocks) == 5
  namespace: dict = {}
  for i, block in enumerate(blocks):
    exec(compile(block, f"docs/own_model.md block {i + 1}", "exec"), namespace)  # noqa: S102
  assert namespace["clf"].arch == "wide_resnet" and namespace["ported"].arch == "preact_resnet18"


@pytest.fixture(scope="module")
def model_and_points(trained_model, small_fmnist):
  """(Flax model, variables, torch twin, x, y): the small CNN of conftest.trained_model (100
  standard-training steps on 4,096 real Fashion-MNIST images) adversarially trained for 40 more
  steps (PGD-3 of step eps/2 at eps 0.1; about 80% clean and 45% APGD-CE accuracy at eps 0.1),
  exported with to_torch, and 200 real test points."""
  from tests.helpers import load_config, train_variables
  config = load_config("at,runlocal")
  config.attack.steps, config.attack.step_size = 3, 0.05
  model, variables = train_variables(config, small_fmnist["train"], 40, start=trained_model[1])
  twin = interop.to_torch((model, variables))
  x = small_fmnist["test"].images[:200].astype(np.float32) / 255
  return model, variables, twin, x, small_fmnist["test"].labels[:200].astype(np.int32)


def test_the_bridge_runs_pgd_as_torchattacks_does(model_and_points):
  """A torch module through the generic bridge (pure_callback forward, torch autograd for the
  input gradient): PGD-10 without random start gives torchattacks' adversarial images."""
  _, _, twin, x, y = model_and_points
  bridged = interop.from_torch(twin, arch="bridge", input_shape=(28, 28, 1))
  ours = np.asarray(jax.jit(lambda v, t: attacks.pgd(
      bridged.logits_fn, v, t, key=jax.random.PRNGKey(0), eps=EPS, step_size=EPS / 4, steps=10,
      random_start=False))(x[:64], y[:64]))
  pgd = torchattacks.PGD(twin, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)
  theirs = pgd(torch.from_numpy(x[:64].transpose(0, 3, 1, 2)),
               torch.from_numpy(y[:64]).long()).numpy().transpose(0, 2, 3, 1)
  # The same torch gradients; the signs agree wherever the two losses' gradients (JAX's CE
  # summed, torch's averaged) are not rounding noise around zero: then the same steps, and each
  # of the <= 10 float32 roundings of x + step moves a pixel by at most 2^-23.
  close = np.abs(ours - theirs) <= 10 * 2.0 ** -23
  assert close.mean() >= 0.999, close.mean()
  assert np.mean(_torch_logits(twin, ours).argmax(-1) == _torch_logits(twin, theirs).argmax(-1)) \
      >= 1 - 1 / 64


def _agree(name, ours_correct, theirs_correct):
  """Robust accuracies within binomial noise and no systematic disagreement on which points
  break. Bound: the two accuracies are estimates of one rate p from the same n points; their
  difference is at most 3 standard errors of a difference of two independent estimates,
  3 sqrt(2 p (1 - p) / n), plus 1/n (conservative: paired points vary less). Systematic: of the
  points only one implementation breaks, the split must not reject 50:50 at 0.001 (binomial)."""
  n = len(ours_correct)
  p = (ours_correct.mean() + theirs_correct.mean()) / 2
  bound = 3 * np.sqrt(2 * p * (1 - p) / n) + 1 / n
  diff = abs(ours_correct.mean() - theirs_correct.mean())
  assert diff <= bound, (name, ours_correct.mean(), theirs_correct.mean(), bound)
  only_ours = int(np.sum(~ours_correct & theirs_correct))
  only_theirs = int(np.sum(ours_correct & ~theirs_correct))
  if only_ours + only_theirs:
    pvalue = stats.binomtest(only_ours, only_ours + only_theirs, 0.5).pvalue
    assert pvalue > 0.001, (name, only_ours, only_theirs)


@pytest.mark.parametrize("name", ["APGD-CE", "APGD-T", "FAB-T", "Square"])
def test_the_suite_attacks_agree_with_torchattacks(model_and_points, name):
  """APGD-CE, APGD-T, FAB-T and Square of uat_jax against torchattacks' implementations with
  matched settings (10 steps, 2 target classes, 200 queries: the test's budget), on the same
  weights (the Flax model here, its to_torch twin there) and the same 200 real test points.
  Square: torchattacks (as AutoAttack's PyTorch code) spends a query on a proposal that leaves
  the image unchanged, which ours flips by default (docs/evaluation.md, "Parity"); matched here
  with flip_unchanged=False. torchattacks' n_queries counts the iterations after the start."""
  model, variables, twin, x, y = model_and_points
  logits_fn = lambda v: model.apply(variables, v, train=False)  # noqa: E731
  key = jax.random.PRNGKey(0)
  ours = {
      "APGD-CE": lambda v, t: attacks.apgd(logits_fn, v, t, key=key, eps=EPS, steps=10),
      "APGD-T": lambda v, t: attacks.apgd_targeted(logits_fn, v, t, key=key, eps=EPS, steps=10,
                                                   num_targets=2),
      "FAB-T": lambda v, t: attacks.fab_targeted(logits_fn, v, t, key=key, eps=EPS, steps=10,
                                                 num_targets=2),
      "Square": lambda v, t: attacks.square(logits_fn, v, t, key=key, eps=EPS, queries=201,
                                            flip_unchanged=False),
  }[name]
  theirs = {  # n_classes = targets + 1: torchattacks targets the n_classes - 1 runners-up
      "APGD-CE": lambda: torchattacks.APGD(twin, eps=EPS, steps=10, loss="ce"),
      "APGD-T": lambda: torchattacks.APGDT(twin, eps=EPS, steps=10, n_classes=3),
      "FAB-T": lambda: torchattacks.FAB(twin, eps=EPS, steps=10, multi_targeted=True,
                                        n_classes=3),
      "Square": lambda: torchattacks.Square(twin, norm="Linf", eps=EPS, n_queries=200,
                                            p_init=0.8, loss="margin", seed=0),
  }[name]()
  adv = np.asarray(jax.jit(ours)(x, y))
  assert np.all(np.abs(adv - x) <= EPS + 1e-6)
  ours_correct = np.asarray(logits_fn(adv)).argmax(-1) == y
  tx, ty = torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(y).long()
  theirs_adv = theirs(tx, ty).detach().numpy().transpose(0, 2, 3, 1)
  _agree(name, ours_correct, _torch_logits(twin, theirs_adv).argmax(-1) == y)
