"""The study's report: `python -m uat_jax.report` (see entry.py).

  collect     from the study's workdirs into OUT/data/ (small JSON)
  merge       the new pieces of runs trained again into OUT/data, if their training repeats
  view        the collected data: runs, per-example outcomes, paired differences
  claims      the plan's verdict rules: the labelled comparisons, Holm, one text per claim
  convergence whether adding the last attack family still changes the worst case
  formatting  numbers, intervals, p-values as the report writes them
  markdown    REPORT.md's text
  figures     the figures
  readme      the README's verdict block
  build       REPORT.md, figures and the README block from OUT/data
  entry       the command line (python -m uat_jax.report)

Building from OUT/data needs none of the training stack (JAX is not imported).
"""
