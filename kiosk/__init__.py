"""The kiosk shell: the only thing the terminal's user talks to."""
