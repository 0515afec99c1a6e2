"""env - environment access as bytes-safe strings."""
import os


def get(name, default=None):
    return os.environ.get(name, default)


def isset(name):
    return name in os.environ
