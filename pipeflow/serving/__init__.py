"""Serving registered models: the HTTP server, batch inference and the audit trail."""
