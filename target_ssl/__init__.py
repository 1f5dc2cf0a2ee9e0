"""The commands of an installed target-ssl (the tools layer: it may use every other package).

Console scripts (pyproject ``[project.scripts]``), each also a module for ``python -m`` / ``torchrun -m``
and a shim in ``tools/`` for a checkout:

- ``target-ssl-pretrain``  -> :func:`target_ssl.pretrain.main` (:func:`pretrain.cli.main` with the health probe)
- ``target-ssl-train-det`` -> :func:`transfer.detection.cli.main`
- ``target-ssl-train-seg`` -> :func:`transfer.segmentation.cli.main`
- ``target-ssl-demo``      -> :func:`target_ssl.demo.main` (the whole paper on the demo data)
- ``target-ssl-benchmark`` -> :func:`target_ssl.benchmark.main`

The demo and the benchmark live here because they use both pretraining and transfer, which do not
import each other.
"""
