"""Image and defocus-map metrics (PSNR, SSIM, MAE, AIWE, Spearman, LPIPS).

Used by the optics half (Xin et al.'s Table 1) and the network half alike; imports only
:mod:`dplab.ops`.
"""
