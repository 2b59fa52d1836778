"`python -m recnb.cli`: the same as the `recnb` command."
from recnb.cli.main import app

app()
