"""The deploy stage: remote state, plans as executable data, and their executor."""
