"""auditbox: build hardened, attested thin-terminal images."""

__version__ = "0.1.0"
