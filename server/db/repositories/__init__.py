"""Repositories: the only code that queries the metadata tables. Names match exactly."""
