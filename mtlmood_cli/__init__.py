"""The `mtlmood` command line: the one package that sees every layer.

Dependencies point one way: ``mtlmood_cli`` -> ``study``, ``serve`` -> ``mtlmood``.
The core library never imports its Ray layers, so the code that offers all of them
as one command lives here, above them (``main.py``), together with the commands that
combine layers (``prepare.py``: local processes from the core, Ray tasks from study).
"""
