"""/healthz and /metrics: what load balancers and monitoring read."""

import pytest

from generation import workers
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_running_cluster_is_seen_alive_and_a_stopped_one_is_not(qcluster):
    process = qcluster(STUDIO_WORKERS=2)
    found = wait_until(
        lambda: [c for c in workers.alive() if c.status in ("Idle", "Working")], timeout=30
    )
    assert [(c.workers, c.host, c.age_s < 6) for c in found] == [(2, found[0].host, True)]
    from tests.conftest import stop_process_group

    stop_process_group(process)
    wait_until(lambda: workers.alive() == [], timeout=30)
