"""The ``notify`` command: a thin Typer + Rich layer over ``namaskah_notify``."""
