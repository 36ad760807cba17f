"""Batch inference without HTTP: score a table with a registered model (``pipeflow predict`` and
the ``predict`` stage). The server in :mod:`pipeflow.serving` answers one request at a time; this
package scores files of any size, in partitions, on the executor."""
