"""Dynamic batching: requests wait up to ``max_delay_s`` for up to ``max_batch_size`` companions.

Each worker is an asyncio task that takes the first waiting request, collects more until the
batch is full or the delay has passed since that first request, and runs the batch in a thread
(torch releases the GIL), so the event loop keeps accepting requests. Several workers score
batches concurrently; the worker count can change at run time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

MAX_WORKERS = 64


@dataclass
class _Job:
    payload: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class WorkerUnavailable(RuntimeError):
    pass


class DynamicBatcher:
    def __init__(
        self,
        score_batch: Callable[[list], list],
        max_batch_size: int,
        max_delay_s: float,
        on_batch: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"invalid max_batch_size {max_batch_size}: expected at least 1")
        if max_delay_s < 0:
            raise ValueError(f"invalid max_delay_s {max_delay_s}: expected 0 or more")
        self.score_batch = score_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.on_batch = on_batch
        # A deque plus an event, not an asyncio.Queue: waiting on an event with a timeout can
        # never lose a job, while a timed-out Queue.get can on Python 3.11.
        self._queue: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._workers: list[asyncio.Task] = []
        self._target_workers = 0
        self._executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="scorer")
        self.batches = 0
        self.last_success: float | None = None
        self.last_error: str | None = None

    @property
    def workers(self) -> int:
        return sum(1 for task in self._workers if not task.done())

    @property
    def target_workers(self) -> int:
        return self._target_workers

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    async def submit(self, payload: Any) -> Any:
        """Queue one request and return its result once its batch has been scored."""
        if self.workers == 0:
            raise WorkerUnavailable("no scoring worker is running; scale workers up through the management API")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(payload, future))
        self._arrived.set()
        return await future

    def set_workers(self, count: int) -> None:
        """Start or stop worker tasks until ``count`` run; a stopped worker finishes its batch first."""
        if not 0 <= count <= MAX_WORKERS:
            raise ValueError(f"invalid worker count {count}: expected 0..{MAX_WORKERS}")
        self._target_workers = count
        self._workers = [task for task in self._workers if not task.done()]
        while len(self._workers) < count:
            self._workers.append(asyncio.get_running_loop().create_task(self._run_worker(len(self._workers))))
        while len(self._workers) > count:
            self._workers.pop().cancel()
        if count == 0:
            self._fail_waiting(WorkerUnavailable("all scoring workers were stopped"))

    async def close(self) -> None:
        self.set_workers(0)
        await asyncio.sleep(0)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run_worker(self, number: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            started = time.perf_counter()
            try:
                results = await asyncio.shield(
                    loop.run_in_executor(self._executor, self.score_batch, [job.payload for job in jobs])
                )
            except asyncio.CancelledError:
                # Stopped while scoring: the thread still finishes, but these jobs get no result.
                self._fail(jobs, WorkerUnavailable("the scoring worker was stopped during this batch"))
                raise
            except Exception as error:  # noqa: BLE001 - a failed batch must fail its requests, not the worker
                log.exception("worker %d: batch of %d failed", number, len(jobs))
                self.last_error = f"{type(error).__name__}: {error}"
                self._fail(jobs, error)
                continue

            self.batches += 1
            self.last_success = time.monotonic()
            self.last_error = None
            if self.on_batch:
                self.on_batch(len(jobs), [started - job.enqueued for job in jobs])
            for job, result in zip(jobs, results):
                if not job.future.done():
                    job.future.set_result(result)

    async def _collect(self) -> list[_Job]:
        """Wait for a first job, then gather more until the batch is full or its delay is over."""
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        jobs = [self._queue.popleft()]
        deadline = jobs[0].enqueued + self.max_delay_s
        try:
            while len(jobs) < self.max_batch_size:
                if self._queue:
                    jobs.append(self._queue.popleft())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
        except asyncio.CancelledError:
            # Stopped while gathering: hand the jobs back to the remaining workers, if any.
            if self._target_workers == 0:
                self._fail(jobs, WorkerUnavailable("all scoring workers were stopped"))
            else:
                self._queue.extendleft(reversed(jobs))
                self._arrived.set()
            raise
        if self._queue:
            self._arrived.set()  # wake another worker for what is left
        return jobs

    def _fail(self, jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    def _fail_waiting(self, error: BaseException) -> None:
        while self._queue:
            self._fail([self._queue.popleft()], error)
