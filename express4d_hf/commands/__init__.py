"""One module per area of the `express4d` command; each exposes `register(subparsers)`."""
