"""``pipeflow ui``: a read-only web dashboard of runs, models, live traffic, drift and alerts.

:func:`pipeflow.ui.app.create_app` builds the FastAPI application; this package imports nothing at
import time so that ``pipeflow --help`` stays free of web frameworks.
"""
