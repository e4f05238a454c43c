"""The `mtlmood` subcommands, one module per command family, each with a ``register(subparsers)``
function (mtlmood_cli/main.py's ``COMMAND_MODULES`` lists them in --help order).

A command module parses arguments, calls the functions of the core (``mtlmood``) and of
the Ray layers (``study``, ``serve``, ``catalog``), prints what happened and returns the exit
status. It imports torch and Ray inside its run functions, so `mtlmood --help` stays fast.
A module may define ``INTERRUPTED``, the line printed on Ctrl-C (see mtlmood_cli/main.py).
"""
