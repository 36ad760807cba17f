"""The wire formats the server speaks, one module each: what a request body means as rows, and
what the answer looks like.

- :mod:`~pipeflow.serving.protocols.native`: pipeflow's own ``/v1/models/{name}/predict`` and
  ``/feedback``;
- :mod:`~pipeflow.serving.protocols.mlflow`: MLflow's scoring server, ``/invocations``;
- :mod:`~pipeflow.serving.protocols.v2`: the Open Inference Protocol (KServe v2), ``/v2/...``.

A decoder (``rows_from_*``) turns a parsed JSON body into a list of rows (dicts of feature values)
or raises :class:`~pipeflow.errors.BadRequest` (422) naming what is wrong; it does not
check the values: every protocol's rows then go through the same signature check and the same
micro-batch (:mod:`pipeflow.serving.routes`). An encoder (``*_body``) shapes the predictions of
one request into that protocol's answer. A body that is not JSON becomes the JSON payload it
stands for first (MLflow's CSV: :func:`~pipeflow.serving.protocols.mlflow.payload_from_csv`; the
Open Inference Protocol's binary tensors: :func:`~pipeflow.serving.protocols.v2.attach_binary`),
and the Open Inference Protocol's binary outputs are bytes after the JSON answer
(:func:`~pipeflow.serving.protocols.v2.infer_answer`). All are plain functions of bytes and JSON
values, with no HTTP or server state, so each protocol can be read, and tested, on its own; the
routes choose them by content type and header.
"""
