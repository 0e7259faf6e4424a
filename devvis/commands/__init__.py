"""One module per ``devvis`` subcommand; each exposes ``register(subparsers)``."""
