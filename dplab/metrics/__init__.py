"""Image and defocus-map metrics (PSNR, SSIM, MAE, AIWE, Spearman, LPIPS) and measurements
on dual-pixel views (their horizontal shift, bands at depth edges).

Used by the optics half (Xin et al.'s Table 1) and the network half alike; imports only
:mod:`dplab.ops`.
"""
