"""`python -m service.cli`: the `grn` command line."""

from service.cli import app

app()
