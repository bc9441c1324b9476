"""Datasets and readers for point sets, pixel sets and RGB-D frames."""

from ._root import bundled_root, data_root

__all__ = ["bundled_root", "data_root"]
