"""The core's `mtlmood` subcommands, one module each with a ``register(subparsers)`` function.

They use the core library only (no Ray). The `mtlmood` program itself, which adds the
commands of the Ray layers (study/cli.py, serve/cli.py) and those that combine layers
(`mtlmood prepare`), is the top-level package ``mtlmood_cli``: the core never imports
the layers above it. A module may define ``INTERRUPTED``, the line printed on Ctrl-C
(see mtlmood_cli/main.py).
"""
