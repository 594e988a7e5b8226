"""Numerical building blocks that know nothing of optics or networks.

* :mod:`~dplab.ops.fftconv`: FFT convolution with the centre convention every blur in dplab uses;
* :mod:`~dplab.ops.filters`: Sobel kernels (RDPD's edge loss, DPDNet's patch selection);
* :mod:`~dplab.ops.radial`: RDPD's radial-distance map and patches (Sec. 4);
* :mod:`~dplab.ops.compositing`: back-to-front "over" compositing.

Layer order: :mod:`dplab.ops` imports nothing else of dplab (besides the argument checks).
"""
