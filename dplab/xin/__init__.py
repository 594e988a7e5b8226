"""Xin et al. (ICCV 2021): the dual-pixel blur operator, Wiener deconvolution and its bias
correction, the multiplane-image (MPI) optimisation and its losses, and the Pixel 4 recipe.
"""
