"""The layout stage: the complete, sorted list of zip entries for a runtime."""
