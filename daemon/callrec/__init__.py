"""callrec: the call-recording register for Asterisk."""

__version__ = "0.1.0"
