"""Images of a job, ready to send: prepared on worker threads, the shared ones (references) once.

Pillow releases the GIL while it decodes, resizes and encodes, so threads scale across cores
without the pickling a process pool pays per image. An image used by several jobs of the run is
kept (least recently used first out, `keep` at most) so references are encoded once per run.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial

from mmad.data.images import EncodedImage, encode_file
from mmad.engine.work import ImageInput, Job


def image_executor(workers: int | None = None) -> Executor:
    """Threads for image preparation (all cores by default)."""
    return ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="mmad-image")


class ImagePreparationError(Exception):
    """An image of the job could not be decoded or encoded; names that image, not the job."""

    def __init__(self, path: object, cause: Exception) -> None:
        words = re.sub(r" <_io\.\w+ object at 0x[0-9a-f]+>", "", str(cause))  # Pillow names its in-memory buffer
        super().__init__(f"cannot prepare image {path}: {type(cause).__name__}: {words}")
        self.path = path


class ImagePreparer:
    def __init__(self, executor: Executor | None, workers: int | None, compress_level: int, keep: int) -> None:
        self._executor = executor
        self._own = executor is None
        self._workers = workers
        self._compress_level = compress_level
        self._keep = keep
        self._shared: OrderedDict[str, asyncio.Future] = OrderedDict()
        self.shared: set[str] = set()  # sha256 of images used by more than one job of the run

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = image_executor(self._workers)
        return self._executor

    async def _encode(self, image: ImageInput) -> EncodedImage:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), partial(encode_file, str(image.path), image.spec,
                                                                self._compress_level))

    async def prepare(self, job: Job) -> dict[str, EncodedImage]:
        """The job's images by sha256; images shared by several jobs are prepared once. Raises
        ImagePreparationError naming the image that failed."""
        images: dict[str, EncodedImage] = {}
        for image in job.images:
            try:
                await self._prepare_one(image, images)
            except Exception as exc:
                raise ImagePreparationError(image.path, exc) from exc
        return images

    async def _prepare_one(self, image: ImageInput, images: dict[str, EncodedImage]) -> None:
        sha = image.ref.sha256
        if sha in images:
            return
        if sha not in self.shared:
            images[sha] = await self._encode(image)
            return
        future = self._shared.get(sha)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(self._encode(image))
            self._shared[sha] = future
            while len(self._shared) > self._keep:
                self._shared.popitem(last=False)
        else:
            self._shared.move_to_end(sha)
        images[sha] = await asyncio.shield(future)

    def close(self) -> None:
        if self._executor is not None and self._own:
            self._executor.shutdown(wait=False, cancel_futures=True)
