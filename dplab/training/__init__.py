"""Training: the resumable :class:`~dplab.training.trainer.Trainer`, the papers' recipes and losses.
"""
