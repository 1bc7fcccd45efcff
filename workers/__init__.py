"""Worker process entry points and the example step handlers."""
