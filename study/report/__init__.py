"""The alpha-study report: statistics, curves and verdicts (pure numpy/scipy/statsmodels),
the evidence read from a study's files, tables, plots, rendering and the writer.

Modules:

* :mod:`study.report.bootstrap` -- arms' runs, the clustered song bootstrap, each run's metric per draw.
* :mod:`study.report.pooled` -- the pooled arm x seed model of a cell (seed noise from every arm).
* :mod:`study.report.combine` -- Banerjee's combination of variance components: CI, p-value, MDE.
* :mod:`study.report.statistics` -- one arm's estimate, the comparison of two arms, TOST, Holm / BH.
* :mod:`study.report.alpha_star` -- alpha* on validation (local peak, parametric-bootstrap interval, bounds).
* :mod:`study.report.slope` -- the censored cross-cell slope of log alpha* on log(N_mood / N_meta).
* :mod:`study.report.curves` -- the cross-fitted "best alpha" choice (and re-exports of the two above).
* :mod:`study.report.verdicts` -- all verdict rows of one cell from a ``CellEvidence``.
* :mod:`study.report.families` -- the declared primary family, the secondary one, verdict text.
* :mod:`study.report.learning` -- did the CNN learn (chance, the reference, stopping)?
* :mod:`study.report.data`, :mod:`~study.report.tables`, :mod:`~study.report.plots`,
  :mod:`~study.report.render`, :mod:`~study.report.document`, :mod:`~study.report.summary`,
  :mod:`~study.report.serving`, :mod:`~study.report.writer` -- files in, tables, figures, text and files out.
"""
