"""A throwaway PostgreSQL server for a test or benchmark run.

Order of preference: TEST_DATABASE_URL (a server you run; each run still makes its own database),
else a fresh cluster in a temp dir from the system's PostgreSQL binaries, else from the binaries
embedded in the `pgserver` wheel. initdb refuses to run as root, so as root the cluster is owned
by and run as an unprivileged user, and a kept cluster (make dev) lives where that user can
reach it (see `cluster_home`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

INSTALL_HINT = (
    "no PostgreSQL server binaries found. Install them (Debian: apt-get install postgresql), "
    "or `pip install pgserver` (embedded binaries; listed in requirements-dev.txt), "
    "or point TEST_DATABASE_URL at a server, e.g. postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
)


def _usable(bindir: Path) -> bool:
    return (bindir / "initdb").exists() and (bindir / "pg_ctl").exists()


def _bin_dir() -> Path:
    """PG_BIN_DIR, else the system's binaries, else pgserver's (PGTEST_USE_PGSERVER forces them)."""
    candidates: list[Path] = []
    if forced := os.environ.get("PG_BIN_DIR"):
        candidates.append(Path(forced))
    if not os.environ.get("PGTEST_USE_PGSERVER"):
        if found := shutil.which("pg_ctl"):
            candidates.append(Path(found).resolve().parent)
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for cand in candidates:
        if _usable(cand):
            return cand
    with contextlib.suppress(ImportError):
        import pgserver  # type: ignore[import-untyped]

        embedded = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if _usable(embedded):
            return embedded
    raise RuntimeError(INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# As root, kept clusters live here: root-owned, so nobody else can plant a folder in it (as anyone
# could in /var/tmp), and outside every checkout, so a private (0700) tree does not matter.
CLUSTERS_HOME = Path("/var/lib/jobs-pipeline-dev")


def cluster_home(wanted: Path) -> Path:
    """Where the kept cluster asked for at `wanted` really lives.

    As root, initdb and the server run as an unprivileged user, who cannot even reach a checkout
    inside a private folder (mode 0700, as `mktemp -d` makes and as /root is). So as root the
    cluster lives under CLUSTERS_HOME in a folder named after a hash of `wanted`: each checkout
    keeps its own data across restarts. A cluster already made at `wanted` stays where it is.
    """
    if os.geteuid() != 0 or (wanted / "data" / "PG_VERSION").exists():
        return wanted
    digest = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:16]
    return CLUSTERS_HOME / digest


def _own_folder(path: Path, user: pwd.struct_passwd) -> None:
    """Make `path` (under root-owned CLUSTERS_HOME) the run user's private folder; refuse one
    that is a link or belongs to someone else rather than start a server in it."""
    CLUSTERS_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        os.chown(path, user.pw_uid, user.pw_gid)
    info = path.lstat()
    if path.is_symlink() or info.st_uid != user.pw_uid:
        raise RuntimeError(f"{path} is not a folder owned by {user.pw_name}; remove it")


def _run_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no unprivileged user (postgres or nobody) exists")


@dataclass
class PostgresServer:
    """A server the tests may create and drop databases on."""

    host: str
    port: int
    user: str = "postgres"
    password: str | None = None
    admin_db: str = "postgres"
    _proc_dir: Path | None = field(default=None, repr=False)
    _bin: Path | None = field(default=None, repr=False)
    _keep: bool = field(default=False, repr=False)

    def url(self, dbname: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+pg8000://{auth}@{self.host}:{self.port}/{dbname}"

    def admin_connection(self):  # type: ignore[no-untyped-def]
        import pg8000.dbapi

        conn = pg8000.dbapi.connect(
            user=self.user,
            host=self.host,
            port=self.port,
            password=self.password,
            database=self.admin_db,
        )
        conn.autocommit = True
        return conn

    def create_database(self, prefix: str = "jobs_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = self.admin_connection()
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def drop_database(self, name: str) -> None:
        conn = self.admin_connection()
        try:
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()

    @property
    def home(self) -> Path | None:
        """The folder of a cluster started here (its data, socket and log); None otherwise."""
        return self._proc_dir

    def bin(self, tool: str) -> str:
        """Path of a client tool (pgbench, psql) matching this server where we started it."""
        if self._bin and (self._bin / tool).exists():
            return str(self._bin / tool)
        found = shutil.which(tool)
        if not found:
            raise RuntimeError(f"{tool} not found: install PostgreSQL's client tools")
        return found

    def stop(self) -> None:
        if self._proc_dir is None or self._bin is None:
            return
        data = self._proc_dir / "data"
        mode = "fast" if self._keep else "immediate"  # a kept cluster shuts down cleanly
        subprocess.run(
            [str(self._bin / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
            user=_uid_or_none(),
            capture_output=True,
            check=False,
            timeout=60,
        )
        pid_file = data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed: make sure nothing is left running
            with contextlib.suppress(Exception):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        if not self._keep:
            shutil.rmtree(self._proc_dir, ignore_errors=True)
        self._proc_dir = None

    def ensure_database(self, name: str) -> str:
        """Create `name` if it does not exist; returns it."""
        conn = self.admin_connection()
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not cur.fetchall():
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name


def _uid_or_none() -> int | None:
    user = _run_user()
    return user.pw_uid if user else None


def server_from_url(url: str) -> PostgresServer:
    parts = urlsplit(url.replace("postgresql+pg8000://", "postgresql://", 1))
    return PostgresServer(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        admin_db=(parts.path.lstrip("/") or "postgres"),
    )


def start_postgres(
    *,
    durable: bool = False,
    extra_conf: dict[str, str] | None = None,
    root: Path | None = None,
    port: int | None = None,
) -> PostgresServer:
    """initdb + pg_ctl start on a free port. By default in a temp dir, removed by stop();
    `durable=False` turns fsync off (the tests need a real server, not a durable one;
    benchmarks pass durable=True). With `root`, the cluster lives there and survives stop()
    (make dev): initdb runs only the first time. As root, `root` is moved where the server's
    user can reach it (`cluster_home`); `PostgresServer.home` says where."""
    bindir = _bin_dir()
    user = _run_user()
    keep = root is not None
    if root is not None and user is not None:
        root = cluster_home(root)
        if root.parent == CLUSTERS_HOME:
            _own_folder(root, user)
    root = root or Path(tempfile.mkdtemp(prefix="jobs-pg-"))
    data, sock = root / "data", root / "sock"
    root.mkdir(parents=True, exist_ok=True)
    sock.mkdir(exist_ok=True)
    if user:
        for path in (root, sock):
            os.chown(path, user.pw_uid, user.pw_gid)
    uid = user.pw_uid if user else None
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    if not (data / "PG_VERSION").exists():
        try:
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-instructions"],
                user=uid, env=env, capture_output=True, check=True, timeout=120,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"initdb failed in {data}: {exc.stderr.decode(errors='replace')[-1000:]}"
                + (f" (it runs as {user.pw_name}: every folder above {root} must be "
                   "searchable by that user)" if user else "")
            ) from None
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "fsync": "on" if durable else "off",
            "synchronous_commit": "on" if durable else "off",
            "full_page_writes": "on" if durable else "off",
            "log_min_messages": "'warning'",
        }
        conf.update(extra_conf or {})
        with open(data / "postgresql.conf", "a") as fh:
            fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
    port = port or free_port()
    proc = subprocess.run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
         "-o", f"-p {port} -k {sock}", "-w", "-t", "60", "start"],
        user=uid, env=env, capture_output=True, check=False, timeout=90,
    )
    server = PostgresServer(host="127.0.0.1", port=port, _proc_dir=root, _bin=bindir,
                            _keep=keep)
    if proc.returncode != 0:
        log = (
            (root / "server.log").read_text(errors="replace")[-2000:]
            if (root / "server.log").exists()
            else ""
        )
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {proc.stderr.decode()[-1000:]}\n{log}")
    deadline = time.monotonic() + 30
    while True:
        try:
            server.admin_connection().close()
            return server
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.1)


def provide_server(*, durable: bool = False) -> PostgresServer:
    """TEST_DATABASE_URL's server if given, else a throwaway one (stop() is then a no-op)."""
    url = os.environ.get("TEST_DATABASE_URL")
    return server_from_url(url) if url else start_postgres(durable=durable)


def migrate(url: str, revision: str = "head", *, down: bool = False) -> None:
    """Build (or tear down) the schema the way production does: through the Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    from localstack.paths import ROOT

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    old = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        (command.downgrade if down else command.upgrade)(cfg, revision)
    finally:
        if old is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = old


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
