"""pytest fixture: `fake_cluster`, a started FakeCluster in the test's tmp_path (`from support.fake_kube.fixtures
import fake_cluster`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .cluster import FakeCluster


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """A running fake cluster, stopped (all pod processes killed) after the test."""
    with FakeCluster(tmp_path) as cluster:
        yield cluster
