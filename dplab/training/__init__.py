"""Training: the resumable :class:`~dplab.training.trainer.Trainer` and what it trains with.

:mod:`~dplab.training.recipes` (the papers' settings, schedules), :mod:`~dplab.training.checkpoints`
(atomic checkpoints, RNG state, data order), :mod:`~dplab.training.monitor` (run log, divergence
guard), :mod:`~dplab.training.objectives` (a registry network's forward and loss by recipe),
the losses (:mod:`~dplab.training.losses`, :mod:`~dplab.training.vgg`), per-paper helpers
(:mod:`~dplab.training.rdpd`, :mod:`~dplab.training.drbnet`, :mod:`~dplab.training.mdp`) and the
benchmark's brief runs (:mod:`~dplab.training.brief`).
"""
