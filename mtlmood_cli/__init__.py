"""The `mtlmood` command line: the one package that sees every layer.

Dependencies point one way: ``mtlmood_cli`` -> ``study``, ``serve``, ``catalog`` -> ``mtlmood``.
Every command (its arguments, messages and exit codes) lives here: ``main.py`` builds the
one parser and dispatches, ``commands/`` holds one module per command family, and
``arguments.py`` the arguments several commands share. The layers below keep only the
functions these commands call.
"""
