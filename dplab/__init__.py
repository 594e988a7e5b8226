"""dplab: dual-pixel defocus deblurring, the library behind the executable book.

Conventions: images are ``(B, C, H, W)`` float32 tensors with linear
intensity in [0, 1]; each dual-pixel view's PSF sums to 1/2 so that ``left + right`` has
the brightness of a conventional image; a positive circle-of-confusion radius means the
scene point lies behind the focal plane.
"""

__version__ = "0.1.0"
