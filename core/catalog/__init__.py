"""A model's life, end to end: build -> check -> publish -> sync to the store -> announce -> resolve -> load
-> roll back.

One module per step (nothing is imported here, so ``import core.catalog.catalog`` in the API
loads no engine):

- ``shipped``: the models that ship in the package (``model/weights``), seeded into the registry.
- ``registry``: the file store of published versions, their cards and the active pointers.
- ``checks``: a candidate file run through the engine (probe, PSNR/SSIM on a bench set). Never imported by ``api/``.
- ``publish``: :class:`~core.catalog.publish.Publisher`, the one path by which a version is published or
  rolled back (``srgan deploy``, ``srgan export --publish``, ``srgan rollback``): sync, check, gate, copy,
  push, announce.
- ``store_sync``: the registry mirrored through the object store, for hosts that share only Redis and the store.
- ``announce``: telling the workers on Redis (the generation counter) and what each loaded.
- ``catalog``: :class:`~core.catalog.catalog.ModelCatalog`: resolve a spec to a version (the one ``resolve``),
  the network a job runs (``blend``), the models offered to jobs.
- ``load``: a resolved blend becomes an engine (``build_upscaler``). Never imported by ``api/``.

The worker keeps built engines in ``worker.engines.EngineCache``; the command line is ``cli/models.py``.
"""
