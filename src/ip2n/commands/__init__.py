"""One module per `ip2n` sub-command; each has `add_parser(subparsers)` and a `run(args)`."""
