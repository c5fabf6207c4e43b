"""The phases of a ``ralu generate`` run, each in its own module, which ``ralu eval`` calls too:

- :mod:`.flags`: the command line checked before any weights (ranges, combinations, sizes
  against the schedules, guidance flags against the family, a video model's frames), and a
  ``--from`` recipe's fields filled in;
- :mod:`.plan`: what the model is (its family and variant, from its configs alone), the
  schedules, which images are already on disk (resume), and under ``accelerate launch`` the
  processes and each one's share of the images;
- :mod:`.load`: the device, the pipeline with its LoRAs and offload, one RALU per schedule;
- :mod:`.execute`: one sampler call for a batch of jobs, timed;
- :mod:`.write`: each image written whole with its recipe, the manifest line after it, the
  output directory's lock, pictures side by side;
- :mod:`.compare`: ``--compare``'s baseline beside RALU.

The recipes themselves (what an image records, what makes two images the same job) are in
:mod:`ralu_torch.recipe` and :mod:`ralu_torch.jobs`; the order of the phases, in
:func:`ralu_torch.generate.generate`.
"""
