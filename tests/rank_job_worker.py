"""``hf-language-ranker rank`` in a subprocess, slowed down on request so a test can kill it mid-run.

The tests run it plain or under ``accelerate launch``::

    python tests/rank_job_worker.py [--delay SECONDS] rank --model ... --candidates ... --output-dir ...
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from conftest import AUTO_DTYPE_VARIABLE, pin_auto_dtype

from hf_language_ranker import rank_job
from hf_language_ranker.cli import main


def slowed(delay: float) -> None:
    """Make every `rank_with_options` call of the job take at least ``delay`` more seconds."""
    rank = rank_job.rank_with_options

    def rank_slowly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)
        return rank(*args, **kwargs)

    rank_job.rank_with_options = rank_slowly


if __name__ == "__main__":
    pin_auto_dtype(os.environ[AUTO_DTYPE_VARIABLE])  # as in the test that started this process
    arguments = sys.argv[1:]
    if arguments[0] == "--delay":
        slowed(float(arguments[1]))
        arguments = arguments[2:]
    raise SystemExit(main(arguments))
