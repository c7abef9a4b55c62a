"""sdtop's terminal UI and command line. Never imports torch or diffusers."""
