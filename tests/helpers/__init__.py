"""Shared builders of the test suite (not tests): synthetic data, local servers and clusters,
Serve apps and loads. Test modules import them as ``helpers.<module>``: pytest's default
(prepend) import mode puts ``tests/`` on ``sys.path`` when it loads ``tests/conftest.py``,
before any test module, whichever file or order a run picks. No test module imports another.
"""
