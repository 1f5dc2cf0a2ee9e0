"""Shared fixtures: the built-in demo datasets, generated once per test session into a temp cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Keep tests hermetic: the demo generator writes under $TARGET_SSL_CACHE.
    cache = tmp_path_factory.mktemp("target_ssl_cache")
    os.environ["TARGET_SSL_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def demo_coco(_demo_cache: Path) -> Path:
    from demo_data import ensure_demo_coco

    return ensure_demo_coco()


@pytest.fixture(scope="session")
def demo_ade(_demo_cache: Path) -> Path:
    from demo_data import ensure_demo_ade

    return ensure_demo_ade()


@pytest.fixture
def ssl_log(caplog: pytest.LogCaptureFixture):
    """caplog that also sees the "target_ssl" logger after `setup_logging` stopped it propagating."""
    import logging

    logger = logging.getLogger("target_ssl")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger="target_ssl")
    yield caplog
    logger.removeHandler(caplog.handler)
