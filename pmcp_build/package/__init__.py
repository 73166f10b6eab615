"""The package stage: the deterministic zip, its build, and inspection of any zip."""
