"""The alpha-study report: statistics, curves and verdicts (pure numpy/scipy/statsmodels),
the evidence read from a study's files, tables, plots, rendering and the writer.

Modules:

* :mod:`study.report.statistics` -- hierarchical bootstrap (training seeds x
  clustered test songs) of one arm's metric and of the difference of two arms,
  TOST equivalence, minimum detectable effect, Holm / BH adjustment.
* :mod:`study.report.curves` -- alpha* on validation with an interval over
  seeds, the cross-fitted "best alpha" arm, the cross-cell slope of log alpha*
  against log(N_mood / N_meta).
* :mod:`study.report.verdicts` -- all verdict rows of one cell from a
  ``CellEvidence``, and the study-wide multiplicity adjustment with verdict text.
"""
