"""Numerical building blocks that know nothing of optics or networks: FFT convolution.

Layer order: :mod:`dplab.ops` imports nothing else of dplab (besides the argument checks).
"""
