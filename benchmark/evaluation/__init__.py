"""The retrieval half of the pipeline: embeddings in, numbers out.

- ``measures``: the one definition of every ranking metric (a per-query value, reduced by a mean)
  and of the competition score; the results schema reads its names and ranges from here;
- ``metrics``: the exact (match-matrix) and the blockwise (no N x N matrix) paths over those
  measures, embedding-structure metrics and the degenerate-embedding check;
- ``retrieval``: exact cosine search (faiss ``IndexFlatIP``, or torch) in one canonical order;
- ``remedies``: the registry of test-time remedies (centering, αQE, DBA, k-reciprocal);
- ``evaluate``: one split's numbers, same-domain leave-one-out or query -> gallery after remedies;
- ``scoring``: a competition submission scored against a truth file (torch-free).

This package's ``__init__`` imports nothing: the torch-free modules stay torch-free.
"""
