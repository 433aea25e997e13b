"""Building the report from OUT/data: figures, REPORT.md and the README's verdict block."""

from __future__ import annotations

import os
from typing import Optional

from uat_jax import files
from uat_jax.report import figures, readme
from uat_jax.report.claims import claim_rows
from uat_jax.report.markdown import markdown
from uat_jax.report.view import Results


def build(data_dir: str, out_dir: str, readme_path: Optional[str] = None) -> str:
  """Writes OUT/REPORT.md and OUT/figures/ from `data_dir`, and the verdict lines into README
  `readme_path` if given; returns REPORT.md's text."""
  r = Results(data_dir)
  figure_dir = os.path.join(out_dir, "figures")
  figures.plot_differences(r, os.path.join(figure_dir, "differences_vs_eps.png"))
  figures.plot_overfitting(r, os.path.join(figure_dir, "robust_overfitting.png"))
  figures.plot_jacobian_margin(r, os.path.join(figure_dir, "jacobian_vs_margin.png"))
  claims = claim_rows(r)
  text = markdown(r, claims)
  files.write_atomic(os.path.join(out_dir, "REPORT.md"), text + "\n")
  if readme_path:
    readme.write_readme(readme_path, readme.readme_block(claims))
  return text
