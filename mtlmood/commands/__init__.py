"""One module per `mtlmood` subcommand, each with a ``register(subparsers)`` function."""
