"""lowshot: a DVC pipeline that turns a few dozen Monet paintings into a Monet-style photo translator."""

__version__ = "0.1.0"
