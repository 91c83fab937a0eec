"""Training recipes: losses and miners (PML; their registry in ``registry``), batch sampling,
optimizers and schedules, ``fit.fit``. Imports nothing: config validation reads ``registry``
without loading the training loop."""
