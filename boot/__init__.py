"""The Metorial boot runtime, bundled into every python package as `__metorial__/`."""
