"""Making features: everything between an image file and the frozen backbone's output.

decoders (files -> uint8 pixels), views (eval view, augmentation policies, input normalization),
augment (the vectorized RandomResizedCrop + flip bank), extract (the one streaming pass that turns
images into every view a run needs), cache (the on-disk, content-addressed feature cache) and
engines (where a run's features come from: the cached engine or the reference oracle), adabn (test-time
BatchNorm statistics re-estimated on each evaluated side's own images). Models live
in ``benchmark.models``.
"""
