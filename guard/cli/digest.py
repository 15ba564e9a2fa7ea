"""``guard digest [--now | --preview] [--journal FILE]``: the coordinator's digest from the journal (guard/digest/send.py).

``--preview`` (the default) prints the digest that would go out now -- text, or
HTML with ``--html`` -- and changes nothing. ``--now`` builds, journals and sends
it to the coordinator at once (advancing the watermark, like a scheduled one);
a digest left unsent by an earlier run is sent first. When the daemon is sending
the digest at that very moment, ``--now`` sends nothing (one digest, not two)
and says so, with exit status 0.
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_digest_command(sub) -> None:
    g = sub.add_parser("digest", help="print (--preview) or send (--now) the coordinator's digest")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--now", action="store_true", help="send the digest to the coordinator now")
    mode.add_argument("--preview", action="store_true", help="print the digest that would go out (default)")
    g.add_argument("--html", action="store_true", help="with --preview: print the HTML form")
    g.add_argument("--journal", type=Path, default=None, metavar="FILE",
                   help="the journal to read (default: daemon.journal of the configuration); "
                        "a demo's: --journal guard-demo/journal.sqlite3")
    g.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    g.set_defaults(func=cmd_digest)


def cmd_digest(args) -> int:
    import asyncio  # noqa: PLC0415 - not at import: `guard classify` builds this parser too

    from guard.logging_setup import setup_logging
    from guard.daemon.service import load_policy_and_templates
    from guard.digest.send import DigestService
    from guard.errors import ConfigError
    from guard.daemon.executor import utc_now
    from guard.daemon.journal import Journal
    from guard.settings import load_settings

    setup_logging(args.log_level, "text", sys.stderr)
    settings = load_settings(args.config)
    if args.journal is not None:
        if not args.journal.is_file():
            raise ConfigError(f"{args.journal}: no such journal (--journal)")
        settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(update={"journal": args.journal})})
    _, renderer = load_policy_and_templates(settings)
    if not settings.daemon.journal.is_file():
        raise ConfigError(f"{settings.daemon.journal}: no journal yet (guard run has not run with this configuration; "
                          "a demo's journal: --journal guard-demo/journal.sqlite3)")
    journal = Journal(settings.daemon.journal)
    try:
        mailer = None
        if args.now:
            if settings.smtp is None:
                raise ConfigError("guard digest --now needs an [smtp] section in the configuration")
            from guard.daemon.mailer import SmtpMailer

            mailer = SmtpMailer(settings.smtp)
        svc = DigestService(settings, journal, mailer, renderer, clock=utc_now)
        if args.now:
            sent = asyncio.run(svc.send_now())
            if not sent and svc.busy is not None:
                # the daemon (or another --now) holds the digest claim: it is sending this digest now
                print("digest not sent: another guard process (%s, pid %s) is sending it right now" % svc.busy,
                      file=sys.stderr)
                return 0
            print("digest sent to the coordinator" if sent else "digest not sent (see the log)", file=sys.stderr)
            return 0 if sent else 1
        r = svc.preview()
        if args.html:
            sys.stdout.write(r.html)
        else:
            sys.stdout.write(f"Subject: {r.subject}\n\n{r.text}")
        return 0
    finally:
        journal.close()
