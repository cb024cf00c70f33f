"""Every door's way into the archive: checks, de-identification, store."""
