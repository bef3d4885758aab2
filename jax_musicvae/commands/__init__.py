"""Sub-commands of the `musicvae` CLI; each module defines `register(subparsers)`."""
