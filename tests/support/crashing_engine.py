"""A test-only engine whose worker process dies on one kind of image: a real crash, for batch tests.

``CrashingEngine`` is the shipped SFace engine, except that ``detect`` ends its process
at once (``os._exit``, as a segfault in a native library or the kernel's OOM killer
would) on an image exactly ``CRASH_WIDTH`` pixels wide. ``RegisterCrashingEngine`` is a
Dask worker plugin that adds it to faceaudit.runtime.ENGINES as ``crashing-sface`` in
every worker process, including those the nanny starts after a crash.
"""

from __future__ import annotations

import os
from dataclasses import replace

from distributed.diagnostics.plugin import WorkerPlugin

from faceaudit.engine.sface_engine import SFaceEngine

CRASH_WIDTH = 203
ENGINE_NAME = "crashing-sface"
EXIT_STATUS = 70


class CrashingEngine(SFaceEngine):
    def detect(self, image, max_faces=100):
        if image.width == CRASH_WIDTH:
            os._exit(EXIT_STATUS)
        return super().detect(image, max_faces=max_faces)


def register() -> None:
    from faceaudit import runtime

    runtime.ENGINES[ENGINE_NAME] = replace(runtime.ENGINES["sface"], name=ENGINE_NAME,
                                           build=lambda settings: CrashingEngine())


class RegisterCrashingEngine(WorkerPlugin):
    name = "register-crashing-engine"

    def setup(self, worker) -> None:
        register()
