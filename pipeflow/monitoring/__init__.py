"""Monitoring: drift against the training reference, alerts, and their history."""
