"""Prometheus metrics at /metrics, correct across every gunicorn front worker.

Request counters live in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by
the pool's owner before the front workers start); the pool's state is read from the board at
scrape time, so it is never stale.
"""
from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from chatterbox_server.api.health import parked_jobs
from chatterbox_server.api.model_states import STATES, model_entries
from chatterbox_server.runtime.telemetry import AUDIO_SECONDS, FIRST_AUDIO, SPEECH_REQUESTS
from chatterbox_server.services import services
from workers.ipc.board import WorkerState

bp = Blueprint("metrics", __name__)

class PoolCollector:
    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        views = services().pool.slots()
        state = GaugeMetricFamily("chatterbox_model_workers", "Model workers by state", labels=["state"])
        for worker_state in WorkerState:
            state.add_metric([worker_state.name.lower()], sum(1 for v in views if v.state == worker_state))
        yield state
        jobs = GaugeMetricFamily("chatterbox_jobs_in_flight", "Running or queued jobs per worker", labels=["slot"])
        restarts = GaugeMetricFamily("chatterbox_model_worker_restarts", "Restarts per slot", labels=["slot"])
        for view in views:
            jobs.add_metric([str(view.slot)], view.active)
            restarts.add_metric([str(view.slot)], view.restarts)
        yield jobs
        yield restarts
        parked = GaugeMetricFamily("chatterbox_jobs_parked", "Jobs whose client reads no audio (not in flight)",
                                   labels=["slot"])
        for view in views:
            parked.add_metric([str(view.slot)], parked_jobs(view))
        yield parked
        queued = GaugeMetricFamily("chatterbox_queued_seconds",
                                   "A new job's estimated wait for a batch row, per slot (admission)", labels=["slot"])
        for view in views:
            queued.add_metric([str(view.slot)], view.queued_seconds)
        yield queued
        yield from model_metrics()


def model_metrics():  # noqa: ANN201 - metric families
    """Each served model's state (1 for its current one), its weights' memory and its requests."""
    entries = model_entries(services(), detailed=False)
    state = GaugeMetricFamily("chatterbox_model_state", "Each served model's state (1: the current one)",
                              labels=["model", "state"])
    memory = GaugeMetricFamily("chatterbox_model_weight_bytes", "Bytes its loaded workers' weights hold",
                               labels=["model"])
    loaded = GaugeMetricFamily("chatterbox_model_workers_loaded", "Its workers with the model loaded",
                               labels=["model"])
    active = GaugeMetricFamily("chatterbox_model_jobs_in_flight", "Its running or queued jobs", labels=["model"])
    loads = GaugeMetricFamily("chatterbox_model_loads", "Loads of it since its workers started", labels=["model"])
    for entry in entries:
        for name in STATES:
            state.add_metric([entry["id"], name], 1.0 if entry["state"] == name else 0.0)
        memory.add_metric([entry["id"]], entry["memory"]["weight_bytes"])
        loaded.add_metric([entry["id"]], sum(1 for worker in entry["workers"] if worker["loaded"]))
        active.add_metric([entry["id"]], entry["active_jobs"])
        loads.add_metric([entry["id"]], entry["loads"])
    yield from (state, memory, loaded, active, loads)


@bp.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for collector in (SPEECH_REQUESTS, AUDIO_SECONDS, FIRST_AUDIO):
            registry.register(collector)
    registry.register(PoolCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
