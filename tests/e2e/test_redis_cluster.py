"""The Redis Cluster client (chatd.cluster.rediscluster) against a real local cluster:
three masters and three replicas of redis-server (tests/redis_cluster.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.redis


def test_fixture_cluster_is_three_masters_with_a_replica_each(redis_cluster):
    """The fixture's cluster: 3 masters and 3 replicas, every slot served, replicas in sync."""
    roles = [role for _, role in redis_cluster.nodes()]
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    assert redis_cluster.wait_ok(1)
    masters = {redis_cluster.master_of(k) for k in ("a", "b", "c", "d", "e", "f", "g", "h")}
    assert masters <= set(redis_cluster.master_ports()) and len(masters) > 1
