"""The manifest stage: metorial.toml loaded and validated into frozen models."""
