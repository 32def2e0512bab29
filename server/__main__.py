"""``python -m server``: the latency service.

    python -m server up                      # main job: service on SQLite + a local agent; profiles this host
    python -m server serve --port 8000       # the service alone (DATABASE_URL, HIL_* settings from the env)
    python -m server token create --role agent --name pixel-lab-1
    python -m server token list | revoke NAME
    python -m server migrate                 # alembic upgrade head on DATABASE_URL (serve does it too)
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .config import VAR, Settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
app = typer.Typer(add_completion=False, no_args_is_help=True, help="hil-latency service: predictions and measurements.")
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens (stored hashed in the database).")
app.add_typer(token_app, name="token")
err = Console(stderr=True)
BACKENDS = ("onnxruntime-cpu", "tflite-cpu")


def _settings(database_url: Optional[str], **kw) -> Settings:
    if database_url:
        kw["database_url"] = database_url
    return Settings.from_env(**kw)


_DB = typer.Option(None, "--database-url", help="default $DATABASE_URL, else sqlite:///var/hil.db")


@app.command()
def serve(host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
          database_url: Optional[str] = _DB,
          auto_profile: Optional[bool] = typer.Option(None, "--auto-profile/--no-auto-profile",
                                                      help="profile devices that register without a predictor "
                                                           "(default $HIL_AUTO_PROFILE, else off)")):
    """Run the HTTP service (OpenAPI docs at /docs)."""
    import uvicorn

    from .app import create_app

    s = _settings(database_url, **({} if auto_profile is None else {"auto_profile": auto_profile}))
    uvicorn.run(create_app(s), host=host, port=port, log_level="warning")


@app.command()
def migrate(database_url: Optional[str] = _DB):
    """Create or upgrade the schema (alembic upgrade head)."""
    from .db import make_engine, migrate as run

    s = _settings(database_url)
    run(make_engine(s.database_url))
    err.print(f"schema at head on {s.database_url}")


@token_app.command("create")
def token_create(name: str = typer.Option(..., "--name"), role: str = typer.Option("agent", "--role",
                 help="agent, client or admin"), database_url: Optional[str] = _DB):
    """Create a token and print it (once: only its hash is stored)."""
    from .auth import create_token
    from .db import make_engine, migrate as run, session_factory

    s = _settings(database_url)
    engine = make_engine(s.database_url)
    run(engine)
    try:
        with session_factory(engine)() as sess:
            print(create_token(sess, name, role))
    except ValueError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)


@token_app.command("list")
def token_list(database_url: Optional[str] = _DB):
    from sqlalchemy import select

    from .db import make_engine, migrate as run, session_factory
    from .models import Token

    s = _settings(database_url)
    engine = make_engine(s.database_url)
    run(engine)
    with session_factory(engine)() as sess:
        for t in sess.scalars(select(Token).order_by(Token.id)):
            state = "revoked" if t.revoked_at else "active"
            print(f"{t.name}\t{t.role}\t{state}\t{time.strftime('%Y-%m-%d %H:%M', time.gmtime(t.created_at))}")


@token_app.command("revoke")
def token_revoke(name: str, database_url: Optional[str] = _DB):
    from .auth import revoke_token
    from .db import make_engine, migrate as run, session_factory

    s = _settings(database_url)
    engine = make_engine(s.database_url)
    run(engine)
    with session_factory(engine)() as sess:
        if not revoke_token(sess, name):
            err.print(f"[bold red]error:[/] name: no active token {name!r} (see `python -m server token list`)")
            raise typer.Exit(2)
    err.print(f"revoked {name}")


@app.command()
def up(host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
       database_url: Optional[str] = _DB,
       backends: str = typer.Option(",".join(BACKENDS), "--backends", help="local backends the agent serves"),
       agent: bool = typer.Option(True, "--agent/--no-agent", help="start a local device agent"),
       per_type: int = typer.Option(30, "--per-type", min=1, help="kernels per type when profiling this host"),
       kernel_types: Optional[str] = typer.Option(None, "--kernel-types", help="profile only these (comma-separated)"),
       session: int = typer.Option(0, "--session", min=0, help="the local agent measures this many calib-small "
                                   "networks per hyperspace at start-up and refits the predictor's scale and "
                                   "per-kernel cost to this session (see `profilers agent --session`); 0: none"),
       session_every: Optional[float] = typer.Option(None, "--session-every", help="with --session: again after "
                                                     "this many minutes when the agent is idle"),
       exit_when_ready: bool = typer.Option(False, "--exit-when-ready",
                                            help="stop once every local device has a predictor (for tests)")):
    """Main job: the service on SQLite plus a local agent for this host's backends. Bundled predictors are
    served at once; a host without one is profiled in the background (progress below and at /devices) and
    its predictor is trained and served when the profiling ends."""
    import httpx
    import uvicorn

    from .app import create_app

    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    bad = [b for b in chosen if b not in BACKENDS]
    if bad:
        err.print(f"[bold red]error:[/] --backends: {', '.join(bad)} not allowed; allowed: {', '.join(BACKENDS)}")
        raise typer.Exit(2)
    if kernel_types:
        from profilers.samplers import kernel_types as all_types

        bad = [t for t in kernel_types.split(",") if t not in all_types()]
        if bad:
            err.print(f"[bold red]error:[/] --kernel-types: {', '.join(bad)} not allowed; allowed: "
                      f"{', '.join(all_types())}")
            raise typer.Exit(2)
    admin = os.environ.get("HIL_ADMIN_TOKEN") or "hil_" + secrets.token_urlsafe(32)  # lives in this process only
    s = _settings(database_url, admin_token=admin, auto_profile=True, profile_per_type=per_type,
                  profile_kernel_types=kernel_types.split(",") if kernel_types else None)
    api = create_app(s)
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            err.print(f"[bold red]error:[/] the server did not start on {url} (port taken?)")
            raise typer.Exit(1)
        time.sleep(0.1)
    err.print(f"service on {url} (docs {url}/docs), database {s.database_url}")
    err.print(f"admin token for this run (writes, jobs): {admin}" if "HIL_ADMIN_TOKEN" not in os.environ
              else "admin token: $HIL_ADMIN_TOKEN")
    proc = None
    if agent:
        cmd = [sys.executable, "-m", "profilers", "agent", "--server", url]
        for b in chosen:
            cmd += ["--backend", b]
        if session:
            cmd += ["--session", str(session)]
        if session_every is not None:
            if not session:
                err.print("[bold red]error:[/] --session-every: needs --session N (calib-small networks per "
                          "hyperspace)")
                raise typer.Exit(2)
            cmd += ["--session-every", str(session_every)]
        log_path = VAR / "agent.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a")
        proc = subprocess.Popen(cmd, env={**os.environ, "HIL_AGENT_TOKEN": admin}, stdout=log_file,
                                stderr=subprocess.STDOUT)
        err.print(f"local agent (pid {proc.pid}) serves: {', '.join(chosen)}; its log: {log_path}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _watch(httpx.Client(base_url=url, timeout=10), chosen, stop, exit_when_ready, proc)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.should_exit = True
        t.join(10)


def _watch(client, backends: list[str], stop: threading.Event, exit_when_ready: bool, proc) -> None:
    """Progress of the local devices' profiling and training, until every one serves a predictor."""
    from profilers.fingerprint import device_slug, local_fingerprint

    names = [f"{b}@{device_slug(local_fingerprint(b))}" for b in backends]
    bars: dict[str, int] = {}
    announced: set[str] = set()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[state]}"), console=err) as prog:
        while not stop.wait(1.0):
            if proc is not None and proc.poll() is not None:
                err.print(f"[bold red]the local agent exited (code {proc.returncode})[/]")
                proc = None
            ready = 0
            for name in names:
                r = client.get(f"/devices/{name}")
                if r.status_code != 200:
                    continue
                d = r.json()
                if d["predictor"] is not None:
                    ready += 1
                    if name not in announced:
                        announced.add(name)
                        v = d["predictor"]["version"]
                        err.print(f"{name}: predictor v{v} is served")
                    if name in bars:
                        prog.update(bars[name], state=f"serving v{d['predictor']['version']}")
                    continue
                c = d.get("profiling")
                if c:
                    if name not in bars:
                        bars[name] = prog.add_task(f"profiling {name}", total=c["total"], state="")
                    tr = d.get("training") or {}
                    state = ("training" if tr.get("state") == "running" else
                             f"training failed: {tr.get('error', '')[:80]}" if tr.get("state") == "failed" else
                             f"{c['jobs']['failed']} failed" if c["jobs"]["failed"] else "")
                    prog.update(bars[name], completed=c["finished"], state=state)
            if exit_when_ready and ready == len(names):
                return


def main() -> None:
    app()


if __name__ == "__main__":
    main()
