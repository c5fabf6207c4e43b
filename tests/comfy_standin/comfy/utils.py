"""Stand-in for ``comfy.utils``: only the progress-bar switch the nodes read."""

PROGRESS_BAR_ENABLED = False
