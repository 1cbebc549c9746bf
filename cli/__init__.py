"""The ``yuyue`` command line: one Typer app that each package adds its commands to."""
