"""Many tasks reach the broker in one push (ORM, or Redis with REDIS_URL), each the signed
task a worker runs, in the order they were made."""

import pytest
from django_q.brokers import Broker
from django_q.signing import SignedPackage
from django_q.tasks import async_task

from generation import broker as batching
from generation import runs

pytestmark = pytest.mark.django_db


def take_all(broker) -> list[str]:
    """Return the packages waiting on the broker, first to last, taking them off it."""
    packages = []
    for _ in range(broker.queue_size()):
        for ack_id, package in broker.dequeue():
            packages.append(package)
            broker.acknowledge(ack_id)
    return packages


def test_enqueue_jobs_hands_the_broker_one_signed_task_per_job(broker):
    runs.enqueue_jobs(41, 5, "clip")  # no worker is alive: no spare tasks

    tasks = [SignedPackage.loads(package) for package in take_all(broker)]
    assert len(tasks) == 5
    assert {task["func"] for task in tasks} == {"generation.tasks.run_next_job"}
    assert {task["args"] for task in tasks} == {(41, "clip")}
    assert {task["group"] for task in tasks} == {"run-41"}
    assert len({task["id"] for task in tasks}) == 5


def test_packages_are_pushed_a_chunk_at_a_time_and_keep_their_order(broker, monkeypatch):
    monkeypatch.setattr(batching, "CHUNK", 3)
    with batching.batched(broker) as batch:
        for number in range(7):  # three pushes: 3, 3 and 1
            async_task("generation.tasks.run_next_job", number, "illustration", broker=batch)
    assert broker.queue_size() == 7

    tasks = [SignedPackage.loads(package) for package in take_all(broker)]
    assert [task["args"][0] for task in tasks] == list(range(7))


def test_nothing_is_pushed_when_making_the_tasks_fails(broker):
    with pytest.raises(RuntimeError), batching.batched(broker) as batch:
        async_task("generation.tasks.run_next_job", 1, "illustration", broker=batch)
        raise RuntimeError("the second task could not be made")
    assert broker.queue_size() == 0


class RecordingBroker(Broker):
    """A broker of a kind the batch knows no bulk push for."""

    def __init__(self):
        self.list_key = "studio-test"
        self.enqueued = []

    def enqueue(self, task):
        self.enqueued.append(task)
        return len(self.enqueued)


def test_another_broker_gets_the_packages_one_by_one_in_order():
    other = RecordingBroker()
    batching.push(other, ["first", "second", "third"])
    assert other.enqueued == ["first", "second", "third"]
