"""Old home of the weighted macro metric; it now lives in mtlmood.metrics, the one metrics module.

Only a re-export, kept while tests/test_report_verdict_simulation.py still imports
``macro_metric`` from here (its owner moves the import, then this file goes).
"""

from __future__ import annotations

from mtlmood.metrics import METRICS, Metric, macro_metric

__all__ = ["METRICS", "Metric", "macro_metric"]
