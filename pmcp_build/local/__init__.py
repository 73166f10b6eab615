"""Running the package that ships, locally: invoke and serve."""
