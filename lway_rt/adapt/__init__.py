"""Stage 2 of LWay: self-supervised adaptation of a pretrained SR network to the user's LR images.

Modules, in the order the data flows: ``patches`` (LR / upsampled-LR patch pairs), ``embed``
(E once per image, R's constants once), ``wavelet`` (Haar high-frequency weight), ``losses``
(lway / naive / identity control), ``step`` (one pure update), ``loop`` (the driver and its
outputs), ``config`` (the frozen recipe). Nothing is imported here, so ``import lway_rt.adapt``
stays cheap; use ``from lway_rt.adapt.loop import adapt``.
"""
