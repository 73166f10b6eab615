"""Commands that run the package that ships, locally: serve, invoke."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pmcp_build.cli.app import (
    MANIFEST_NAME,
    ManifestOption,
    app,
    build_quietly,
    check_targets,
    err,
    guard,
    load,
)
from pmcp_build.errors import UserError

PassthroughOption = Annotated[
    list[str] | None,
    typer.Option(
        "--env-passthrough",
        metavar="NAME",
        help="Give the server this variable of yours too (repeat for several); by default it "
        "sees only Lambda's variables and the target's declared environment.",
    ),
]
AwsCredentialsOption = Annotated[
    bool,
    typer.Option(
        "--aws-credentials",
        help="Give the server your AWS credentials (as AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), as the function's role would on Lambda.",
    ),
]


@app.command()
@guard
def serve(
    file: ManifestOption = Path(MANIFEST_NAME),
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8765,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Warm instances serving requests side by side (as Lambda scales)."
        ),
    ] = 4,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Rebuild and reload when a file of the source or the manifest changes; "
            "the old package serves until the new one has loaded.",
        ),
    ] = False,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            help="An Origin browsers may call from besides the loopback ones (repeatable; "
            "'*' allows any).",
        ),
    ] = None,
    env_passthrough: PassthroughOption = None,
    aws_credentials: AwsCredentialsOption = False,
) -> None:
    """Run the built package on 127.0.0.1 as a Function URL would (MCP over HTTP)."""
    import signal

    from pmcp_build.local import watch as watching
    from pmcp_build.local.runner import open_pool
    from pmcp_build.local.serve import ALLOWED_ORIGINS_ENV, make_server, runtime_origins

    loaded = load(file)
    if target:
        check_targets(loaded, [target])
    package = build_quietly(loaded, json_mode=False)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: instances and temp dirs go

    def say(line: str) -> None:
        err.print(line, markup=False)

    origins = list(allow_origin or [])
    settings = _settings(loaded, target, env_passthrough or [], aws_credentials)
    # The runtime checks Origin as on Lambda: the instances are told the list (their
    # environment is Lambda's, not this process's).
    settings.environment[ALLOWED_ORIGINS_ENV] = runtime_origins(origins)

    def start(built: Any) -> Any:
        return open_pool(built.path, built.layout, concurrency, settings=settings)

    signal.signal(signal.SIGTERM, stop)
    starting = f"starting {concurrency} instance{'s' * (concurrency > 1)} of {package.path.name}…"
    pool = watching.start_quietly(lambda: start(package), say, starting)
    invoker = watching.Swappable(pool) if watch else pool
    info = getattr(invoker, "server_info", None) or {}
    if info.get("load_error"):
        # Every request will answer "server failed to load": say why, where it is run.
        err.print(f"the server failed to load:\n{info['load_error'].rstrip()}", markup=False)
    for note in info.get("notes") or ():
        err.print(f"note: {note}", markup=False)
    try:
        server = make_server(invoker, port, origins)
        bound = server.server_address[1]
        print(
            f"serving {package.path.name} at http://127.0.0.1:{bound}/mcp (Ctrl-C to stop)",
            flush=True,
        )
        try:
            if isinstance(invoker, watching.Swappable):
                reloader = watching.Reloader(
                    invoker, package, lambda: build_quietly(load(file), json_mode=False), start, say
                )
                base = loaded.path.resolve().parent
                watching.serve_watching(server, reloader, watching.watched_roots(loaded), base)
            else:
                server.serve_forever()
        finally:  # Ctrl-C goes on to the CLI's guard: "interrupted", exit 130
            server.server_close()
    finally:
        invoker.close()


@app.command()
@guard
def invoke(
    event: Annotated[str, typer.Option("--event", "-e", help="Event JSON file, or - for stdin.")],
    file: ManifestOption = Path(MANIFEST_NAME),
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
    env_passthrough: PassthroughOption = None,
    aws_credentials: AwsCredentialsOption = False,
) -> None:
    """Run one event through the built package and print the response as JSON."""
    from pmcp_build.local.runner import open_invoker

    raw = sys.stdin.read() if event == "-" else _read_event_file(Path(event))
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"--event {event}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(payload, dict) and payload.get("jsonrpc") == "2.0":
        # A bare JSON-RPC message: wrap it as the platform would.
        payload = {"action": "mcp.request", "messages": [json.dumps(payload)]}
    loaded = load(file)
    if target:
        check_targets(loaded, [target])
    package = build_quietly(loaded, json_mode=True)
    settings = _settings(loaded, target, env_passthrough or [], aws_credentials)
    invoker = open_invoker(package.path, package.layout, settings=settings)
    try:
        result = invoker.invoke(payload)
    finally:
        invoker.close()
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if isinstance(result, dict) and (result.get("success") is False or "errorType" in result):
        raise typer.Exit(1)  # the response is printed; the exit code says it failed


def _settings(
    loaded: Any, target: str | None, passthrough: list[str], aws_credentials: bool
) -> Any:
    """The function's name, memory, timeout, region and environment as a lambda target
    declares them (the context object and os.environ show them to the handler); defaults
    without one. Nothing of the caller's environment but what was asked for."""
    import os

    from pmcp_build.deploy.auth_env import auth_environment, served_url
    from pmcp_build.local.runner import FunctionSettings

    auth = auth_environment(served_url(loaded.manifest, target))  # oauth: checked as deployed
    chosen = loaded.manifest.targets.get(target) if target else None
    if chosen is None:
        lambdas = [t for t in loaded.manifest.targets.values() if t.kind == "lambda"]
        chosen = lambdas[0] if len(lambdas) == 1 else None
    environment: dict[str, str] = {}
    if chosen is not None and chosen.kind == "lambda":
        name = next(k for k, t in loaded.manifest.targets.items() if t is chosen)
        environment = _declared(chosen.environment, f"targets.{name}")
    environment.update(auth)
    for name in passthrough:
        if name not in os.environ:
            raise UserError(f"--env-passthrough {name}: {name} is not set here")
        environment[name] = os.environ[name]
    if aws_credentials:
        environment.update(_aws_credentials())
    if chosen is None or chosen.kind != "lambda":
        return FunctionSettings(loaded.manifest.server.name, environment=environment)
    region = chosen.region or os.environ.get("AWS_REGION") or "us-east-1"
    return FunctionSettings(
        chosen.function, chosen.memory, chosen.timeout, environment=environment, region=region
    )


def _declared(raw: dict[str, str], where: str) -> dict[str, str]:
    """The target's environment as Lambda would get it: `${env:NAME}` read from here by
    the resolver `plan` uses (so the values are masked in what is printed); a variable
    that refers to one not set is left out, with a note."""
    import os

    from pmcp_build.manifest.model import ENV_REF
    from pmcp_build.manifest.secrets import resolve

    given: dict[str, str] = {}
    for key, value in raw.items():
        missing = [m.group(1) for m in ENV_REF.finditer(value) if m.group(1) not in os.environ]
        if missing:
            err.print(
                f"note: environment.{key} not given: {missing[0]} is not set here", markup=False
            )
            continue
        given[key] = value
    return dict(resolve(given, where).values)


def _aws_credentials() -> dict[str, str]:
    """The caller's AWS credentials, from wherever boto3 finds them (variables, a
    profile, SSO), as the three variables Lambda gives a function for its role."""
    import boto3

    found = boto3.Session().get_credentials()
    if found is None:
        raise UserError("--aws-credentials: no AWS credentials found here (set a profile or AWS_*)")
    frozen = found.get_frozen_credentials()
    given = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        given["AWS_SESSION_TOKEN"] = frozen.token
    return given


def _read_event_file(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"--event {path}: no such file")
    return path.read_text()
