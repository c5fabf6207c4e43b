"""Analysis and presentation around the sampler, kept out of its runtime path.

- :mod:`.quality`: RALU and its ablations on the analytic Gaussian backend, with metrics
  against the known data distribution (``bench/quality.py``);
- :mod:`.demo`: ``ralu demo``, the comparison figure;
- :mod:`.figures`: drawings of what a transition did (token layouts);
- :mod:`.selection`: agreement between selection policies (``bench/selection.py``).
"""
