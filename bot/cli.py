"""The `salesbot` command line: serve, db upgrade, team import, leads import and template,
console, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from config.settings import Settings, SettingsError, load_settings

log = logging.getLogger("salesbot")


class MaskingFilter(logging.Filter):
    """Phone numbers never reach a log line in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        from handlers.phones import mask_phones_in

        message = record.getMessage()
        masked = mask_phones_in(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salesbot", description="salesbot CRM bot")
    parser.add_argument("--config", help="TOML settings file")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bot")
    serve.add_argument("--config", dest="config_sub", help="TOML settings file")

    db = sub.add_parser("db", help="database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply the migrations")

    team = sub.add_parser("team", help="the roster")
    team_sub = team.add_subparsers(dest="team_command", required=True)
    team_import = team_sub.add_parser("import", help="load the roster from csv or xlsx")
    team_import.add_argument("file")
    team_import.add_argument("--json", action="store_true", help="print a JSON summary")

    leads = sub.add_parser("leads", help="lead import")
    leads_sub = leads.add_subparsers(dest="leads_command", required=True)
    leads_import = leads_sub.add_parser("import", help="import leads from csv or xlsx")
    leads_import.add_argument("file")
    leads_import.add_argument("--dry-run", action="store_true", help="check, write nothing")
    leads_import.add_argument("--skip-invalid", action="store_true",
                              help="write the valid rows even when some are rejected")
    leads_import.add_argument("--sheet", help="the workbook's sheet to read")
    leads_import.add_argument("--default", action="append", default=[], metavar="FIELD=VALUE",
                              help="the value of FIELD where a row leaves it empty")
    leads_import.add_argument("--json", action="store_true", help="print a JSON summary")
    leads_template = leads_sub.add_parser("template", help="write the import template")
    leads_template.add_argument("file", help="a .xlsx or .csv path")

    console = sub.add_parser("console", help="chat with the bot in the terminal")
    console.add_argument("--as", dest="as_name", required=True, help="a roster name")

    demo = sub.add_parser("demo", help="load the demo team and leads")
    demo.add_argument("--if-empty", action="store_true", help="only into an empty roster")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = getattr(args, "config_sub", None) or args.config
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"salesbot: {exc}", file=sys.stderr)
        return 2
    setup_logging()
    try:
        return _run(args, settings)
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from storage.db import upgrade

    if args.command == "db":
        upgrade(settings.database.url)
        print("database is up to date")
        return 0
    if args.command == "serve":
        return serve(settings)
    upgrade(settings.database.url)
    if args.command == "team":
        from handlers.roster import import_roster_cli

        return asyncio.run(import_roster_cli(settings, Path(args.file), as_json=args.json))
    if args.command == "leads":
        return _leads(args, settings)
    if args.command == "console":
        from bot.console import run_console

        return asyncio.run(run_console(settings, args.as_name))
    if args.command == "demo":
        from bot.demo import load_demo_cli

        return asyncio.run(load_demo_cli(settings, only_if_empty=args.if_empty))
    return 2


def _leads(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.lead_import import (
        ImportError,
        ImportOptions,
        cli_failure,
        import_leads_cli,
        parse_defaults,
        template_cli,
    )

    if args.leads_command == "template":
        return template_cli(Path(args.file))
    try:
        defaults = parse_defaults(args.default)
    except ImportError as exc:
        return cli_failure(str(exc), as_json=args.json)
    options = ImportOptions(sheet=args.sheet, defaults=defaults,
                            skip_invalid=args.skip_invalid)
    return asyncio.run(import_leads_cli(settings, Path(args.file), options,
                                        dry_run=args.dry_run, as_json=args.json))


def serve(settings: Settings) -> int:
    from aiohttp import web

    from bot.app import create_app
    from storage.db import is_sqlite, upgrade

    if is_sqlite(settings.database.url):
        upgrade(settings.database.url)  # a fresh SQLite file is created and migrated here
    else:
        from storage.db import check_current

        problem = check_current(settings.database.url)
        if problem:
            print(f"salesbot: {problem}", file=sys.stderr)
            return 2
    app = create_app(settings)
    log.info("listening on http://%s:%s", settings.http.host, settings.http.port)
    web.run_app(app, host=settings.http.host, port=settings.http.port, print=None,
                access_log=None, shutdown_timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
