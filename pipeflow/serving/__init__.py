"""Serving a registered model over HTTP (``pipeflow serve``): :mod:`pipeflow.serving.app` builds the
server and names the module of each part. Batch inference is :mod:`pipeflow.scoring`, the audit
trail the server writes :mod:`pipeflow.store.journal`."""
