"""A test's gate on one model's first weight read, for tests that need a model to stay "loading"
until they say so (a model served while another loads). On PYTHONPATH, Python imports this file at
the start of every process of the server; it acts only in a model worker's process, once
workers.engines.chatterbox is imported there:

  LOAD_GATE_MODEL   the Chatterbox model whose weight read waits (standard, turbo, multilingual)
  LOAD_GATE_FILE    the read goes on once this file exists (or after LOAD_GATE_SECONDS, 600)

Nothing of the server's own code changes: the gate wraps ChatterboxEngine._read_weights.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import time

TARGET = "workers.engines.chatterbox"


def held_read(read_weights):
    def read(self):
        gate, ceiling = os.environ["LOAD_GATE_FILE"], float(os.environ.get("LOAD_GATE_SECONDS", "600"))
        if self.model == os.environ["LOAD_GATE_MODEL"]:
            logging.getLogger("chatterbox.test-gate").warning("chatterbox-%s's load waits for %s", self.model, gate)
            deadline = time.monotonic() + ceiling
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.05)
        return read_weights(self)
    return read


class GateOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            module.ChatterboxEngine._read_weights = held_read(module.ChatterboxEngine._read_weights)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("LOAD_GATE_FILE") and os.environ.get("LOAD_GATE_MODEL"):
    sys.meta_path.insert(0, GateOnImport())
