"""qtools - the qmail mail stack as a ucspi-style toolkit of small programs."""
__version__ = "0.1.0"
