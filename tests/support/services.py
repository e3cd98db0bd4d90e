"""Real infrastructure for the tests: PostgreSQL, an MLflow tracking server, HAProxy, Spark.

Each class starts the real program (installed by ``scripts/services/install.sh`` or the dev
extra) on a free port of 127.0.0.1 in a temporary folder of its own, waits until it answers,
and stops it again (``stop()`` or ``with``); a failure to start raises :class:`ServiceError`
with one line that names the binary, the log file and the log's last lines.

* :class:`PostgresServer`: a throw-away cluster (``initdb`` + ``postgres``), run as the
  ``postgres`` system user when the tests run as root (PostgreSQL refuses to run as root);
  ``url`` is a SQLAlchemy URL ``postgresql+psycopg://...``; ``create_database`` gives each test
  a database of its own.
* :class:`MlflowServer`: ``mlflow server`` with a database backend (a SQLite file by default,
  or any SQLAlchemy URL, e.g. a :class:`PostgresServer` database) that stores and serves the
  artifacts itself (``--serve-artifacts``), so clients share nothing but its URL; optionally
  behind MLflow's basic authentication (clients send ``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD`` from their environment).
* :class:`LoadBalancer`: HAProxy in front of N HTTP upstreams: round robin, active health
  checks, connection failures and empty responses retried on another upstream, reloadable
  with a new set of upstreams without dropping connections.
* :class:`LocalSpark`: a ``local[N]`` SparkSession whose Python workers run this interpreter.

No pytest here: fixtures wrap these classes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

INSTALL_HINT = "run scripts/services/install.sh"


class ServiceError(RuntimeError):
    """A real service could not be found, started or stopped."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 6) -> str:
    """The last ``lines`` non-empty lines of a log file, joined on one line."""
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").strip().splitlines()
    tail = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(tail) or "(empty log)"


def _find_binary(name: str, *candidates: str) -> str:
    """The path of ``name`` on PATH or among ``candidates``; a ServiceError when missing."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError(f"{name} not found on PATH nor in {list(candidates)}: {INSTALL_HINT}")


class ServerProcess:
    """One server process in its own session, its output in a log file.

    ``user`` runs it as another (unprivileged) account; only root can do that.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: pwd.struct_passwd | None = None,
    ) -> None:
        self.name, self.args, self.log_path = name, list(args), log_path
        self.env, self.cwd, self.user = env, cwd, user
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                **_as_user(self.user),
            )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError(f"{self.name} is not running")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def error(self, what: str) -> ServiceError:
        """A one-line error naming the binary and ending with the log's tail."""
        return ServiceError(
            f"{self.name} ({self.args[0]}) {what}; log {self.log_path}: {log_tail(self.log_path)}"
        )

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll ``ready`` until it is true; the seconds it took. Raises if the process exits."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise self.error(f"exited with code {code} before {what}")
            if ready():
                return time.monotonic() - start
            time.sleep(0.05)
        self.stop()
        raise self.error(f"not {what} within {timeout_s:.0f} s")

    def send(self, sig: int) -> None:
        """Send ``sig`` to the process (not its group)."""
        if self.running:
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0, group: bool = True) -> None:
        """Send ``sig`` (to the process group, or to the leader only), SIGKILL the group after
        ``timeout_s``.  Servers that manage their children (postgres, the HAProxy master) are
        stopped through the leader alone, as their documentation asks."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                os.kill(process.pid, sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen arguments that run the child as ``user`` (with only that user's group)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class _Service:
    """Context-manager plumbing shared by the services."""

    def start(self, timeout_s: float = 60.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """The newest PostgreSQL server ``bin`` folder (``CASCADE_PG_BINDIR`` overrides)."""
    configured = os.environ.get("CASCADE_PG_BINDIR")
    if configured:
        return Path(configured)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise ServiceError(f"PostgreSQL server binaries (initdb, postgres) not found: {INSTALL_HINT}")


class PostgresServer(_Service):
    """A throw-away PostgreSQL cluster listening on 127.0.0.1, password authentication.

    Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the
    cluster lives as long as the test session, and the store's semantics (transactions,
    constraints, concurrency) do not depend on it.  Shared memory for parallel queries lives
    in files (``dynamic_shared_memory_type=mmap``) because containers often mount a tiny
    ``/dev/shm``; the locale is ``C`` so that ``initdb`` does not depend on generated locales.
    """

    def __init__(
        self,
        *,
        user: str = "cascade",
        password: str = "cascade-test",
        database: str = "cascade",
        parent: Path | None = None,
        max_connections: int = 200,
    ) -> None:
        self.user, self.password, self.database = user, password, database
        self.parent, self.max_connections = parent, max_connections
        self.port = 0
        self.base: Path | None = None
        self.startup_s: dict[str, float] = {}
        self._daemon: ServerProcess | None = None

    # -- URLs

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default database."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str | None = None) -> str:
        """libpq connection string for ``psycopg.connect``."""
        return (
            f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} "
            f"dbname={database or self.database} connect_timeout=2"
        )

    # -- lifecycle

    def start(self, timeout_s: float = 60.0) -> Self:
        bindir = postgres_bindir()
        run_as = self._run_as()
        begin = time.monotonic()
        # The cluster folder must be reachable by the postgres user: pytest's own temporary
        # folders are private to root (0700), so the cluster gets its own folder in /tmp.
        self.base = Path(tempfile.mkdtemp(prefix="cascade-pg-", dir=self.parent))
        data, pwfile = self.base / "data", self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if run_as is not None:
            for path in (self.base, pwfile):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.base),
        }
        initdb = [
            str(bindir / "initdb"), "-D", str(data), "-U", self.user,
            "--auth=scram-sha-256", f"--pwfile={pwfile}",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        ]  # fmt: skip
        log = self.base / "initdb.log"
        with log.open("wb") as out:
            done = subprocess.run(
                initdb, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.base,
                check=False, **_as_user(run_as),
            )  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(f"initdb ({initdb[0]}) failed with code {done.returncode}; "
                               f"log {log}: {log_tail(log)}")  # fmt: skip
        self.startup_s["initdb"] = time.monotonic() - begin
        for attempt in range(3):  # the free port may be taken between choosing and binding
            self.port = free_port()
            settings = {
                "listen_addresses": "127.0.0.1",
                "port": self.port,
                "unix_socket_directories": self.base,
                "max_connections": self.max_connections,
                "shared_buffers": "32MB",
                "dynamic_shared_memory_type": "mmap",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "logging_collector": "off",
            }
            options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
            self._daemon = ServerProcess(
                "postgres",
                [str(bindir / "postgres"), "-D", str(data), *options],
                self.base / f"postgres-{self.port}.log",
                env=env,
                cwd=self.base,
                user=run_as,
            )
            self._daemon.spawn()
            try:
                self.startup_s["postgres"] = self._daemon.wait_until(
                    self._accepts_connections, timeout_s, "accepting connections"
                )
                break
            except ServiceError:
                if attempt < 2 and "could not bind" in self._daemon.log_path.read_text():
                    self._daemon.stop()
                    continue
                self.stop()
                raise
        self.create_database(self.database)
        self.startup_s["total"] = time.monotonic() - begin
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions), then remove the cluster."""
        if self._daemon is not None:
            self._daemon.stop(signal.SIGINT, group=False)
            self._daemon = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    @property
    def running(self) -> bool:
        return self._daemon is not None and self._daemon.running

    # -- databases

    def create_database(self, name: str) -> str:
        """Create ``name`` (if missing) and return its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name must be a lower-case identifier: {name!r}")
        psycopg = _psycopg()
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing its connections first."""
        psycopg = _psycopg()
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _accepts_connections(self) -> bool:
        psycopg = _psycopg()
        try:
            with psycopg.connect(self.conninfo("postgres")) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        """None (this user), or the ``postgres`` account when running as root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceError(
                "PostgreSQL refuses to run as root and there is no 'postgres' user: "
                f"{INSTALL_HINT} (Debian's postgresql package creates it)"
            ) from exc


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ServiceError(
            "psycopg is not installed: pip install 'cascade-router[postgres]'"
        ) from exc
    return psycopg


# ------------------------------------------------------------------------------------- MLflow


class MlflowServer(_Service):
    """``mlflow server`` on 127.0.0.1 with a database backend that serves its own artifacts.

    ``backend_uri`` defaults to a SQLite file in the server's folder; artifacts are stored
    under ``artifacts`` there and reach clients over HTTP (``mlflow-artifacts:/``), so a
    client needs only ``url`` (as the tracking and registry URI).  With ``auth`` the server runs
    MLflow's basic-auth app (the ``mlflow[auth]`` extra) with one admin account; clients pass
    :attr:`client_env` in their environment.
    """

    def __init__(
        self,
        *,
        backend_uri: str | None = None,
        parent: Path | None = None,
        workers: int = 1,
        auth: bool = False,
    ) -> None:
        self.backend_uri, self.parent, self.workers = backend_uri, parent, workers
        self.auth = auth
        self.username, self.password = "cascade-admin", "cascade-" + os.urandom(8).hex()
        self.port = 0
        self.base: Path | None = None
        self.startup_s = 0.0
        self._daemon: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client_env(self) -> dict[str, str]:
        """What a client sets in its environment to reach this server (credentials, if any)."""
        if not self.auth:
            return {}
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }

    @property
    def artifacts(self) -> Path:
        """Where the server stores artifacts (the clients never read it directly)."""
        if self.base is None:
            raise ServiceError("mlflow server is not started")
        return self.base / "artifacts"

    def start(self, timeout_s: float = 120.0) -> Self:
        self.base = Path(tempfile.mkdtemp(prefix="cascade-mlflow-", dir=self.parent))
        backend = self.backend_uri or f"sqlite:///{self.base / 'mlflow.db'}"
        self.port = free_port()
        # The server must not inherit a client-side tracking configuration of the test run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # Job execution (GenAI jobs) would start a job runner and seven huey consumer
        # processes (~600 MiB, seconds of CPU at start-up); a model registry needs none of it.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        args = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend,
            "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
        ]  # fmt: skip
        if self.auth:
            args += ["--app-name", "basic-auth"]
            env.update(self._auth_config())
        self._daemon = ServerProcess(
            "mlflow server", args, self.base / "mlflow-server.log", env=env, cwd=self.base
        )
        self._daemon.spawn()
        self.startup_s = self._daemon.wait_until(self._healthy, timeout_s, "healthy on /health")
        return self

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def _auth_config(self) -> dict[str, str]:
        """The basic-auth app's configuration file and the environment that points at it."""
        assert self.base is not None
        config = self.base / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            # users other than the admin read nothing unless granted
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{self.base / 'basic_auth.db'}\n"
            f"admin_username = {self.username}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # one PBKDF2 check per minute and user, not per request (replicas poll aliases)
            "auth_cache_ttl_seconds = 60\n"
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
        }

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


# ------------------------------------------------------------------------------------ HAProxy


_HAPROXY_CONFIG = """\
global
    maxconn 4096
    # a request is only re-sent if it fits in one buffer (default 16 KiB): chat requests
    # carry whole conversations.  Buffers come from a pool, used per active connection.
    tune.bufsize {buffer_bytes}
    stats socket {socket} mode 600 level admin
    # a reload lets the old worker finish its requests, but not forever
    hard-stop-after {hard_stop_after_s}s

defaults
    mode http
    log stdout format raw local0 info
    option httplog
    # also the pause before retrying after a refused connection: keep it short on a LAN
    timeout connect {connect_timeout_ms}ms
    timeout client {client_timeout_s}s
    timeout server {server_timeout_s}s
    timeout http-request 10s
    timeout queue 5s
    # A failed connection is retried on another server at once (redispatch on every retry);
    # retry-on also re-sends a request whose server closed without any answer (it died).
    retries {retries}
    option redispatch 1
    retry-on {retry_on}
    # A request can only be re-sent if HAProxy still holds all of it: wait for the whole body
    # (up to one buffer) before connecting.  Without this a POST whose body streamed
    # to the dying server is not retried; on a reused client connection HAProxy then closes
    # that connection without an answer and without a log line (the client is to retry).
    option http-buffer-request
    # On a reload the old worker would close its idle client connections at once, racing a
    # request a client is sending on one (it gets no answer); instead answer that request
    # with "Connection: close" (bounded by hard-stop-after).
    option idle-close-on-response

frontend cascade
    bind 127.0.0.1:{port}
    # answered by HAProxy itself: is the balancer up?
    monitor-uri /lb-health
    capture request header x-request-id len 64
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri {health_path}
    http-check expect status 200
    # Active checks every {check_interval_ms} ms; in addition the first connection error seen
    # on live traffic takes a server out at once (observe layer4 + on-error mark-down).
    default-server check inter {check_interval_ms}ms fastinter {check_interval_ms}ms \
downinter {check_interval_ms}ms fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down
{l7_retry_rule}{servers}
"""


class LoadBalancer(_Service):
    """HAProxy (master-worker) in front of ``upstreams`` (``host:port`` each), round robin.

    What is retried on another upstream (``retry_on``, HAProxy's ``retry-on``):
    ``conn-failure`` (refused / timed out connecting: the request never left HAProxy) and
    ``empty-response`` (the upstream closed the connection without a byte of response: it
    died while handling the request).  A response whose headers have reached the client can
    never be retried: a stream cut off by a dying upstream reaches the client truncated.
    ``retry_non_idempotent=False`` restricts the layer-7 retries (everything but
    ``conn-failure``) to GET/HEAD/OPTIONS.  A request larger than ``buffer_bytes`` (HAProxy's
    ``tune.bufsize``, minus room for header rewrites) is streamed to the upstream and cannot
    be re-sent at layer 7 either.
    """

    def __init__(
        self,
        upstreams: Sequence[str],
        *,
        health_path: str = "/healthz",
        check_interval_ms: int = 200,
        retries: int = 3,
        retry_on: str = "conn-failure empty-response",
        retry_non_idempotent: bool = True,
        server_timeout_s: float = 120.0,
        connect_timeout_ms: int = 100,
        buffer_bytes: int = 65536,
        parent: Path | None = None,
    ) -> None:
        self.upstreams = list(upstreams)
        self.connect_timeout_ms, self.buffer_bytes = connect_timeout_ms, buffer_bytes
        self.health_path, self.check_interval_ms = health_path, check_interval_ms
        self.retries, self.retry_on = retries, retry_on
        self.retry_non_idempotent, self.server_timeout_s = retry_non_idempotent, server_timeout_s
        self.parent = parent
        self.port = 0
        self.base: Path | None = None
        self.startup_s = 0.0
        self._daemon: ServerProcess | None = None
        self._binary = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        if self.base is None:
            raise ServiceError("haproxy is not started")
        return self.base / "haproxy.cfg"

    def start(self, timeout_s: float = 30.0) -> Self:
        self._binary = _find_binary("haproxy", "/usr/sbin/haproxy")
        self.base = Path(tempfile.mkdtemp(prefix="cascade-lb-", dir=self.parent))
        self.port = free_port()
        self._write_config()
        self._daemon = ServerProcess(
            "haproxy",
            # -W master-worker (reload = SIGUSR2 to the master), -db stay in the foreground
            [self._binary, "-W", "-db", "-f", str(self.config_path)],
            self.base / "haproxy.log",
            cwd=self.base,
        )
        self._daemon.spawn()
        self.startup_s = self._daemon.wait_until(self._answers, timeout_s, "answering")
        return self

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop(signal.SIGUSR1, group=False)  # soft stop: finish open requests
            self._daemon = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    @property
    def log_path(self) -> Path:
        if self.base is None:
            raise ServiceError("haproxy is not started")
        return self.base / "haproxy.log"

    def reload(self, upstreams: Sequence[str], timeout_s: float = 10.0) -> float:
        """Balance over ``upstreams`` from now on; the seconds until the new worker served.

        The new configuration is checked first (``haproxy -c``); the old worker finishes the
        requests it holds, new connections go to the new worker.
        """
        if self._daemon is None:
            raise ServiceError("haproxy is not started")
        previous = self.upstreams
        self.upstreams = list(upstreams)
        self._write_config()
        check = subprocess.run(
            [self._binary, "-c", "-q", "-f", str(self.config_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check.returncode != 0:
            self.upstreams = previous
            self._write_config()
            message = " | ".join(check.stderr.strip().splitlines()[-4:])
            raise ServiceError(f"haproxy ({self._binary}) rejected the new config: {message}")
        self._daemon.send(signal.SIGUSR2)
        names = {self.server_name(i) for i in range(len(self.upstreams))}
        return self._daemon.wait_until(
            lambda: set(self._states_or_empty()) == names, timeout_s, "reloaded"
        )

    @staticmethod
    def server_name(index: int) -> str:
        """The name HAProxy knows upstream ``index`` by."""
        return f"u{index}"

    def server_states(self) -> dict[str, str]:
        """Each server's check status (``UP``, ``DOWN``, ``MAINT``, ...) from the stats socket."""
        return parse_server_states(self.command("show stat"))

    def wait_states(self, expected: dict[str, str], timeout_s: float = 10.0) -> float:
        """Wait until the servers in ``expected`` have those states; the seconds it took."""
        if self._daemon is None:
            raise ServiceError("haproxy is not started")

        def reached() -> bool:
            states = self._states_or_empty()
            return all(states.get(name, "").startswith(state) for name, state in expected.items())

        return self._daemon.wait_until(reached, timeout_s, f"servers {expected}")

    def command(self, line: str) -> str:
        """One command on HAProxy's runtime API (the admin stats socket)."""
        if self.base is None:
            raise ServiceError("haproxy is not started")
        return haproxy_command(self.base / "admin.sock", line)

    def _states_or_empty(self) -> dict[str, str]:
        try:
            return self.server_states()
        except OSError:
            return {}

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/lb-health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _write_config(self) -> None:
        if self.base is None:
            raise ServiceError("haproxy is not started")
        servers = "".join(
            f"    server {self.server_name(i)} {address}\n"
            for i, address in enumerate(self.upstreams)
        )
        rule = (
            ""
            if self.retry_non_idempotent
            else "    http-request disable-l7-retry if !METH_GET !METH_HEAD !METH_OPTIONS\n"
        )
        text = _HAPROXY_CONFIG.format(
            socket=self.base / "admin.sock",
            hard_stop_after_s=int(self.server_timeout_s) + 5,
            connect_timeout_ms=self.connect_timeout_ms,
            buffer_bytes=self.buffer_bytes,
            client_timeout_s=int(self.server_timeout_s) + 5,
            server_timeout_s=int(self.server_timeout_s),
            retries=self.retries,
            retry_on=self.retry_on,
            port=self.port,
            health_path=self.health_path,
            check_interval_ms=self.check_interval_ms,
            l7_retry_rule=rule,
            servers=servers,
        )
        tmp = self.base / "haproxy.cfg.tmp"
        tmp.write_text(text)
        tmp.replace(self.base / "haproxy.cfg")


def haproxy_command(socket_path: Path | str, line: str) -> str:
    """One command on an HAProxy runtime API socket (``show stat``, ``disable server``, ...)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(str(socket_path))
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def parse_server_states(show_stat: str, backend: str = "replicas") -> dict[str, str]:
    """Each server of ``backend`` and its check status, from ``show stat`` output."""
    rows = csv.DictReader(io.StringIO(show_stat.lstrip("# ")))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == backend and row["svname"] not in ("FRONTEND", "BACKEND")
    }


# -------------------------------------------------------------------------------------- Spark


def java_major(java: str | None = None) -> int:
    """The major version of the Java runtime Spark would use (0 when there is none).

    Spark's launcher takes ``$JAVA_HOME/bin/java`` when ``JAVA_HOME`` is set, else ``java``.
    """
    if java is None:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else (shutil.which("java") or "")
    if not java or not os.access(java, os.X_OK):
        return 0
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


class LocalSpark(_Service):
    """A ``local[cores]`` SparkSession bound to 127.0.0.1, its Python workers on this Python.

    Needs Java 17+ (PySpark 4).  No UI, ``cores`` shuffle partitions, Arrow for pandas UDFs.
    ``pythonpath`` folders are put first on the workers' ``PYTHONPATH`` (a checkout whose
    packages the UDFs import).
    """

    MIN_JAVA = 17

    def __init__(
        self, cores: int = 2, driver_memory: str = "1g", pythonpath: Sequence[Path] = ()
    ) -> None:
        self.cores, self.driver_memory, self.pythonpath = cores, driver_memory, list(pythonpath)
        self.session: Any = None
        self.startup_s = 0.0

    def start(self, timeout_s: float = 120.0) -> Self:
        major = java_major()
        if major < self.MIN_JAVA:
            found = f"Java {major}" if major else "no Java runtime"
            raise ServiceError(
                f"Spark needs Java {self.MIN_JAVA}+ and found {found} "
                f"(JAVA_HOME={os.environ.get('JAVA_HOME')}): {INSTALL_HINT}"
            )
        from pyspark.sql import SparkSession

        begin = time.monotonic()
        # PySpark takes the workers' interpreter from PYSPARK_PYTHON when the context is made
        # (the spark.pyspark.python setting is not read on this path), else `python3` from
        # PATH: outside an activated venv that is a Python without pandas or mlflow.  The JVM
        # and so the workers inherit PYTHONPATH from this process at the same moment.
        pythonpath = [str(p) for p in self.pythonpath]
        if os.environ.get("PYTHONPATH"):
            pythonpath.append(os.environ["PYTHONPATH"])
        launch_env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        if pythonpath:
            launch_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        with _environment(launch_env):
            self.session = (
                SparkSession.builder.master(f"local[{self.cores}]")
                .appName("cascade-router-tests")
                .config("spark.driver.host", "127.0.0.1")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.driver.memory", self.driver_memory)
                .config("spark.ui.enabled", "false")
                .config("spark.sql.shuffle.partitions", str(self.cores))
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .getOrCreate()
            )
        self.startup_s = time.monotonic() - begin
        return self

    def stop(self) -> None:
        if self.session is not None:
            self.session.stop()
            self.session = None


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
