"""The `recnb` command line (hand-written): a thin layer over the stages; `main` holds the commands, `common` what several share."""
from .main import app
