"""The report's figures: differences to the baseline against eps, train vs validation robust
accuracy over training, and the Jacobian norm against the robustness margin."""

from __future__ import annotations

from uat_jax import files
from uat_jax.report.claims import MARGIN
from uat_jax.report.view import JACOBIAN_PRIMARY, NAMES, Results, margins


def plot_differences(r: Results, path: str) -> None:
  """Each method minus its baseline against eps (worst case, best checkpoint): per-seed dots,
  the mean and the 95% t-interval band."""
  plt = files.pyplot()
  base, std = r.study["baseline"], r.study["standard_baseline"]
  panels = ([(m, base) for m in r.present("at_entm", "at_ls")],
            [(m, std) for m in r.present("entm", "ls")])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
  for ax, pairs in zip(axes, panels):
    for k, (m, b) in enumerate(pairs):
      xs, est, low, high = [], [], [], []
      for e in r.grid:
        d = r.paired(r.final[m], r.final[b], "worst", e)
        if d is None:
          continue
        xs.append(e)
        est.append(100 * d["interval"].estimate)
        low.append(100 * d["interval"].low)
        high.append(100 * d["interval"].high)
        jitter = (k - 0.5) * 0.004
        ax.scatter([e + jitter] * len(d["per_seed"]), [100 * v for v in d["per_seed"]], s=10,
                   color=f"C{k}", alpha=0.6)
      if xs:
        ax.plot(xs, est, marker="o", color=f"C{k}", label=f"{NAMES[m]} - {NAMES[b]}")
        ax.fill_between(xs, low, high, color=f"C{k}", alpha=0.2)
    ax.axhline(0, color="black", lw=0.8)
    for y in (-100 * MARGIN, 100 * MARGIN):
      ax.axhline(y, color="grey", lw=0.6, ls=":")
    ax.axvline(r.train_eps, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("L-inf eps")
    ax.set_ylabel("worst-case robust accuracy difference (points)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  axes[0].set_title("vs AT (best checkpoints)")
  axes[1].set_title("vs standard training (best checkpoints)")
  files.save_figure(fig, path)


def plot_overfitting(r: Results, path: str) -> None:
  """Train (PGD-10 on the training batches) and validation (PGD-20) robust accuracy of every
  seed of the adversarially trained methods, learning-rate decays marked."""
  plt = files.pyplot()
  methods = [m for m in ("at", "at_entm", "at_ls") if r.final.get(m)]
  fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(5 * max(len(methods), 1), 3.8),
                           dpi=120, sharey=True, squeeze=False)
  for ax, m in zip(axes[0], methods):
    for k, run in enumerate(r.final[m]):
      curves = run.get("curves", {})
      for key, style, label in (("train/accuracy_adv", "--", "train (PGD-10)"),
                                ("eval/pgd_accuracy", "-", "validation (PGD-20)")):
        if curves.get(key):
          s, v = zip(*curves[key])
          ax.plot(s, v, style, color=f"C{k}", lw=0.9,
                  label=f"seed {run['seed']} {label}" if k == 0 or key.startswith("eval") else
                  None)
      if curves.get("eval/pgd_accuracy") and k == 0:
        last = curves["eval/pgd_accuracy"][-1][0]
        for bnd in run["boundaries"]:
          ax.axvline(bnd * last, color="grey", lw=0.8, ls=":")
    ax.set_title(f"{NAMES[m]}: robust accuracy at eps {r.train_eps:g}")
    ax.set_xlabel("training step (dotted: learning-rate decays)")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("robust accuracy")
  if axes[0][0].get_legend_handles_labels()[0]:
    axes[0][0].legend(fontsize=6)
  files.save_figure(fig, path)


def plot_jacobian_margin(r: Results, path: str) -> None:
  """Primary Jacobian norm against the worst-case robustness margin per test image."""
  plt = files.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for k, m in enumerate(r.study["jacobian"]["methods"]):
    xs, ys = [], []  # (k - 1) * 0.004: methods side by side at each margin
    for run in r.final.get(m, []):
      norms = run.get("jacobian", {}).get("norms", {}).get(JACOBIAN_PRIMARY)
      mg = margins(r, run)
      if norms is None or mg is None:
        continue
      n = min(len(norms), len(mg))
      xs += list(mg[:n] + (k - 1) * 0.004)
      ys += norms[:n]
    if xs:
      ax.scatter(xs, ys, s=3, alpha=0.3, color=f"C{k}", label=NAMES[m])
  ax.set_yscale("log")
  ax.set_xlabel("robustness margin: smallest eps broken in the worst case (0: misclassified)")
  ax.set_ylabel(f"|J| {JACOBIAN_PRIMARY}")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, markerscale=4)
  files.save_figure(fig, path)
