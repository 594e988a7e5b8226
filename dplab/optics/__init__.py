"""Part I of the book: thin-lens defocus, the ray tracer, dual-pixel PSFs, radial distortion
and the fit of PSF models to calibrated kernels.
"""
