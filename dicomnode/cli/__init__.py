"""The `dicomnode` command."""
