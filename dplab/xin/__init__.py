"""Xin et al. (ICCV 2021): the dual-pixel blur operator, Wiener deconvolution and its bias
correction, the multiplane-image (MPI) optimisation and its losses, and the Pixel 4 recipe.

Modules, each importing only those above it:

* :mod:`dplab.xin.kernels`: kernel-pair checks, spectra, per-layer resizing, the kernel grid.
* :mod:`dplab.xin.bias`: the constants of Sec. 4.3, the bias correction ``B(d)`` (Eq. 5) and
  the expected energy (Eq. 4 / supp. Eq. 37).
* :mod:`dplab.xin.wiener`: two-view Wiener deconvolution (supp. Eq. 27), the hypothesis energy
  (supp. Eq. 26) and the Wiener depth-from-defocus baseline of Table 1.
* :mod:`dplab.xin.noise_bias`: the Monte Carlo check of the noise bias (supp. C.2).
* :mod:`dplab.xin.blur`: the spatially varying DP blur of the MPI layers and its adjoint.
* :mod:`dplab.xin.multiplane`: the MPI, compositing (Eqs. 1, 15) and DP rendering (Eq. 2).
* :mod:`dplab.xin.mpi_losses`: the loss terms of Eq. 6 (Sec. 4.3, supp. C.3, D).
* :mod:`dplab.xin.mpi`: the MPI optimisation (Sec. 4.3, supp. D).
* :mod:`dplab.xin.protocol`: how an all-in-focus image is scored against Table 1 (intensity
  scale, saving, alignment, border; supplement D).
* :mod:`dplab.xin.recipe`: both methods on the Pixel 4 scenes, scored as Table 1.
"""
