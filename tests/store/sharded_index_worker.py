"""Run by test_sharded_index.py under torchrun: a sharded index in which rank 1 fails after its first batch.

    torchrun --nproc-per-node 2 sharded_index_worker.py CACHE STORE raise|exit
"""

import os
import sys

from vidsearch.model.source import ModelSource
from vidsearch.store import indexer

SOURCE = ModelSource(backbone="vidsearch-tiny", num_frames=4)


def fail_after_first_batch(how: str):
    encode, calls = indexer.encode_rows, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            if how == "exit":
                os._exit(3)  # dies without unwinding, as a killed process would
            raise RuntimeError("rank 1 fails mid-way")
        return encode(*args, **kwargs)

    return failing


def main(cache: str, store: str, how: str) -> None:
    if int(os.environ["RANK"]) == 1:
        indexer.encode_rows = fail_after_first_batch(how)
    indexer.index_cache_sharded(model=SOURCE.load(), source=SOURCE, cache_dir=cache, store_dir=store, rebuild=True,
                                batch_size=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
