"""Run-level code: commands over run folders, above ``training/`` and beside ``reports/``.

- :mod:`~vqlab.runs.sample`: ``vqlab sample``, a prior run's samples (ids, images, a grid);
- :mod:`~vqlab.runs.evaluate`: ``vqlab evaluate``, a tokenizer's image quality and collapse
  diagnostics in ``eval.json``;
- :mod:`~vqlab.runs.tokenize`: ``vqlab tokenize``, a dataset through a tokenizer into a token file;
- :mod:`~vqlab.runs.diagnose`: ``vqlab diagnose``, a run folder's checkpoint diagnosed on its data;
- :mod:`~vqlab.runs.diagnose_codebook`: ``vqlab diagnose --codebook``, any tokenizer's codebook
  (with its ids, latents, labels when given) from someone else's checkpoint.

Components below never import these; experiments and the CLI above call them.
"""
