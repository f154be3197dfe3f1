"""`conveyor serve`: a plan behind the Open Inference Protocol over HTTP (conveyor.serve)."""

from __future__ import annotations

import click

from conveyor.cli_requant import requant_option
from conveyor.errors import ConveyorError


@click.command("serve")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="The model the plan was made for (.onnx file or zoo name).")
@click.option("--name", default=None, help="The model's name in URLs (default: the graph's name).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--backend", "backends", multiple=True, metavar="DEVICE=BACKEND",
              help="Run DEVICE's stage on BACKEND (emulator, cpu, gpu, ...); repeatable.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests in flight at most; more are answered 503 with Retry-After.")
@click.option("--paced", is_flag=True, help="Time each emulated FPGA stage as the plan models it.")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --paced: stretch every modeled time by this factor (slow motion).")
@click.option("--token", default=None, envvar="CONVEYOR_SERVE_TOKEN",
              help="Bearer token required on every route but /v2/health/*.")
@click.option("--insecure", is_flag=True, help="Allow binding beyond loopback without --token.")
@requant_option
def serve(plan_path, model, name, executor, backends, host, port, max_queue, paced, time_scale, token, insecure) -> None:
    """Serve PLAN over HTTP (Open Inference Protocol / KServe v2) until SIGTERM."""
    from conveyor.cli import _resolve_model
    from conveyor.plan import Plan
    from conveyor.serve.server import Server, is_loopback

    if not is_loopback(host) and token is None and not insecure:
        raise ConveyorError(f"--host {host} is beyond loopback: give --token T (clients send "
                            "'Authorization: Bearer T') or --insecure")
    if time_scale is not None and not paced:
        raise ConveyorError("--time-scale stretches paced timing: give --paced as well")
    mapping = {}
    for b in backends:
        device, sep, backend = b.partition("=")
        if not sep or not device or not backend:
            raise ConveyorError(f"--backend '{b}': expected DEVICE=BACKEND, e.g. fpga0=emulator")
        mapping[device] = backend
    plan = Plan.load(plan_path)
    graph = _resolve_model(model, fingerprint=plan.fingerprint)
    from conveyor.runtime.stages import build_stages

    build_stages(plan, graph)  # a plan made for another model, or hand-edited wrongly: one line, before serving
    server = Server(plan, graph, name=name, executor=executor,
                    backends=mapping or None, paced=paced, time_scale=time_scale or 1.0, max_queue=max_queue,
                    token=token)
    server.run(host=host, port=port, print_fn=lambda s: click.echo(s, err=True))
