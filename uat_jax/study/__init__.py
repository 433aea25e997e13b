"""The paper's study as one resumable pipeline: `python -m uat_jax.study` (see entry.py).

  spec       the runs and outputs a study config asks for, and their markers (pure)
  sweep      the sweep's choice (ROOT/sweep.json)
  controls   Jacobian norms and the temperature-matched control
  pieces     the pipeline as pieces, in the order they run
  scheduler  claims, shards and polling: several processes share one study
  cost       the study's cost before it runs (--dry_run)
  pilot      the pilot's rule for the training regime
  entry      the command line (python -m uat_jax.study)

Importing this package imports none of them: the report reads `spec` without the training stack.
"""
