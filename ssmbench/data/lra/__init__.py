"""Long Range Arena (Tay et al. 2021): ListOps, Text, Retrieval, Image, Pathfinder and Path-X.

Each task reads the files of the original release layout (`release.py` says where they are looked
for); `listops_generator.py` and `pathfinder_generator.py` write the same layout from a seed.
LRA Image is the grayscale CIFAR-10 task of `ssmbench.data.images`.
"""
