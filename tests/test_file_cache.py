"""The file cache the polls share without Redis: expired answers leave the directory at the
next cull, and a cull comes at most every few seconds, not on every set."""

from studio.cache import FileCache


def entries(cache: FileCache) -> int:
    return len(cache._list_cache_files())


def test_expired_answers_are_removed_at_the_next_cull_and_live_ones_kept(tmp_path):
    cache = FileCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 5000}})
    cache.set("version 1", "an answer already expired", timeout=0)
    cache.set("version 2", "a live answer", timeout=60)
    assert entries(cache) == 2  # within CULL_SECONDS of the first set: no cull

    cache._cull_due = 0.0  # CULL_SECONDS have passed
    cache.set("version 3", "another live answer", timeout=60)

    assert entries(cache) == 2
    assert cache.get("version 2") == "a live answer"
    assert cache.get("version 3") == "another live answer"


def test_a_full_cache_still_makes_room_when_it_culls(tmp_path):
    cache = FileCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 4, "CULL_FREQUENCY": 2}})
    for number in range(4):
        cache.set(f"version {number}", "a live answer", timeout=60)
    assert entries(cache) == 4

    cache._cull_due = 0.0
    cache.set("version 4", "a live answer", timeout=60)

    assert entries(cache) == 3  # half of the four culled, then the new one written
