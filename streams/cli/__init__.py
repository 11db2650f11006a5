"""The `streams` command line. Every user mistake or service failure is one clear line."""

from __future__ import annotations

import logging
import sys

import typer
from typer.exceptions import TyperException

from streams.cli import audit, ctr, demo, dev, fraud, hostile, pipeline, query, transactions, versions
from streams.errors import StreamsError

app = typer.Typer(
    name="streams",
    help="Kappa-architecture event processor: rolling CTR and fraud signals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(pipeline.produce_app, name="produce")
pipeline.produce_app.command("hostile")(hostile.produce_hostile)
pipeline.produce_app.command("transactions")(transactions.produce_transactions)
app.add_typer(query.app, name="query")
app.add_typer(ctr.app, name="ctr")
app.add_typer(audit.app, name="audit")
app.command()(pipeline.worker)
app.command()(demo.demo)
app.command()(pipeline.bench)
app.command()(fraud.train)
app.command()(fraud.evaluate)
app.command()(fraud.entity_study)
app.command()(versions.replay)
app.command()(versions.promote)
app.command()(versions.retire)
app.command()(versions.versions)
app.command()(versions.verify)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The driver logs tracebacks while it retries; a command reports the outcome in one line.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="streams", standalone_mode=False)
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            exc.show()  # type: ignore[attr-defined]
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"streams: error: {exc.format_message()}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("streams: aborted", file=sys.stderr)
        sys.exit(130)
    except StreamsError as exc:
        print(f"streams: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("streams: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
