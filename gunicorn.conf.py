"""gunicorn settings for chatterbox-server, all derived from the CHATTERBOX_* environment.

Run: gunicorn -c gunicorn.conf.py
The master starts the model pool once (when_ready) and stops it last (on_exit); front workers are
gevent workers that never import a model runtime. Keep preload_app off: the app must be created
after the fork, in each worker, once gevent has patched the process.
"""
import os
import shutil

from chatterbox_server.runtime.announce import ready_line
from chatterbox_server.security.keys import ApiKeys
from chatterbox_server.settings import Settings

_settings = Settings.from_env()
ApiKeys.load(_settings.api_key, _settings.api_keys_file)     # a bad keys file stops the start here, loudly

wsgi_app = "chatterbox_server.app:create_app()"
bind = _settings.bind_addresses
workers = _settings.front_workers
worker_class = "gevent"
worker_connections = _settings.worker_connections
preload_app = False
timeout = 60                     # a heartbeat for gevent workers, not a request deadline
graceful_timeout = _settings.graceful_timeout
keepalive = 5
loglevel = _settings.log_level
accesslog = "-"
errorlog = "-"
proc_name = "chatterbox-server"
control_socket_disable = True    # no control socket in $HOME under a hardened systemd unit


# The pool hangs on the arbiter, not on this module: a HUP re-executes this file, and the pool
# (with its loaded model) must outlive that.
def when_ready(server):
    from workers.pool import ModelPool
    pool = server.chatterbox_pool = ModelPool(_settings)
    pool.start()
    # request metrics of every front worker, summed at /metrics (prometheus_client multiprocess mode)
    metrics_dir = os.path.join(pool.run_dir, "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    server.log.info("model pool started: state in %s", pool.run_dir)
    pool.when_serving(lambda info: server.log.info(
        ready_line(info.get("engine", "?"), info.get("model", "?"), _settings.bind_addresses)))


def post_fork(server, worker):
    pool = getattr(server, "chatterbox_pool", None)
    if pool is not None:
        pool.forget_in_child()


def post_worker_init(worker):
    from chatterbox_server.runtime import draining
    draining.attach(worker)      # so the app can answer 503 + Retry-After while this worker stops


def on_reload(server):
    pool = getattr(server, "chatterbox_pool", None)
    if pool is not None:
        from chatterbox_server.runtime import draining
        draining.mark_reload(pool.run_dir)     # the old workers' SIGTERM is a reload, not a stop


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    pool = getattr(server, "chatterbox_pool", None)
    if pool is not None:
        pool.stop()
