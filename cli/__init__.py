"""The elrbench command line (installed as elrbench.cli)."""
