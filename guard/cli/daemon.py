"""`guard` subcommands of the daemon part (registered by guard.cli.main): ``run`` and ``demo``."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import time
from pathlib import Path

from guard.errors import ConfigError

DEMO_MARKER = ".guard-demo"
DEFAULT_DEMO_DIR = Path("guard-demo")
#: what a demo run leaves in its directory (removed before the next run)
DEMO_OUTPUTS = ("Maildir", "outbox", "digest.txt", "digest.html", "journal.sqlite3", "journal.sqlite3-wal",
                "journal.sqlite3-shm")

log = logging.getLogger("guard.run")


class StartupAbandoned(BaseException):
    """A second SIGTERM/SIGINT during start-up: stop the step in progress (nothing is written yet)."""


class StartupSignals:
    """SIGTERM and SIGINT from the moment ``guard run`` starts until the daemon's own handlers
    take over (guard/daemon/supervisor.py): recorded instead of killing the process, so start-up -- the
    configuration, the model, the templates -- is abandoned cleanly at the next step, exit status 0,
    no mail processed. A second signal interrupts the step in progress at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StartupSignals":
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # pragma: no cover - not the main thread (an embedding caller)
                pass
        return self

    def _handler(self, signum, frame) -> None:
        if self.received is not None:
            raise StartupAbandoned(signum)
        self.received = signum  # nothing else here: logging from a signal handler can deadlock

    def requested(self) -> int | None:
        return self.received

    def abandon(self, step: str) -> bool:
        """True (and one log line) when a signal came before or during ``step``."""
        if self.received is None:
            return False
        log.info("%s received during start-up (%s): start-up abandoned, no mail processed",
                 signal.Signals(self.received).name, step)
        return True

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handler:
                signal.signal(sig, previous)


_EARLY: StartupSignals | None = None


def early_signals(argv: list[str]) -> None:
    """guard.cli.main.main, before it even builds the parser: when this may be ``guard run``, start
    recording SIGTERM/SIGINT now (the imports and parsing take a while on a slow host)."""
    global _EARLY
    if "run" in argv and _EARLY is None:
        _EARLY = StartupSignals().install()


def early_signals_parsed(command: str | None) -> None:
    """After parsing: not ``guard run`` after all -- the usual handlers back, a signal re-raised."""
    global _EARLY
    if _EARLY is not None and command != "run":
        early, _EARLY = _EARLY, None
        early.restore()
        if early.received is not None:
            signal.raise_signal(early.received)


def add_commands(sub) -> None:
    """Add this part's subcommands to the `guard` parser."""
    r = sub.add_parser("run", help="watch the events inbox over IMAP: classify, reply, route and file")
    r.add_argument("--once", action="store_true", help="process what is there now, then exit")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="decide and log everything, send nothing, move nothing (journal kept in memory)")
    mode.add_argument("--shadow", action="store_true",
                      help="act normally, but every automatic reply goes to the coordinator instead")
    r.add_argument("--no-model", action="store_true", help="rules only")
    r.add_argument("--new-journal", action="store_true",
                   help="start with a new, empty journal although the account has guard's folders already "
                        "(the journal was lost: mail already handled may be handled again)")
    r.add_argument("--log-level", default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="default: [logging] level of the configuration (INFO)")
    r.add_argument("--log-format", default=None, choices=("text", "json"),
                   help="default: [logging] format of the configuration (text)")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="run the whole pipeline once on the bundled sample messages, or on yours "
                                    "(--messages), and show the coordinator's digest (no server needed)")
    d.add_argument("--workdir", type=Path, default=DEFAULT_DEMO_DIR,
                   help=f"where the Maildir, the outbox, the digest and the journal go (default: ./{DEFAULT_DEMO_DIR}; "
                        "a second run replaces the first)")
    d.add_argument("--messages", metavar="PATH", action="append", default=None,
                   help="your own messages instead of the samples: a directory of .eml files, an mbox file (as a "
                        "mail client exports it) or a Maildir (repeatable)")
    d.add_argument("--clean", action="store_true", help="remove the demo directory (--workdir) and exit")
    d.add_argument("--no-model", action="store_true", help="rules only")
    d.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    d.set_defaults(func=cmd_demo)

    from guard.cli.digest import add_digest_command

    add_digest_command(sub)


def setup_logging(level: str, fmt: str = "text") -> None:
    # text or JSON, secrets and card numbers masked; imapclient and aiosmtplib log protocol lines
    # (LOGIN, AUTH) at DEBUG: kept at WARNING (guard/logging_setup.py)
    from guard.logging_setup import setup_logging as setup

    setup(level, fmt, sys.stderr)


def _classifier(settings, no_model: bool):
    from guard.classification.assemble import build_classifier
    from guard.mail import language

    # the daemon chooses replies' languages: the language model first, while memory is low (see
    # language.preload), and before the analyser's fork; a one-shot classify never loads it
    language.preload()
    model = None
    if not no_model:
        from guard.classification.model_loader import load_default_model

        model = load_default_model(settings)
    return build_classifier(settings, model=model)


def cmd_run(args) -> int:
    # first of all: a SIGTERM while the model loads must not kill guard with -15 (systemd, podman)
    global _EARLY
    early, _EARLY = _EARLY or StartupSignals().install(), None
    try:
        return _run(args, early)
    except StartupAbandoned as exc:
        log.info("%s received again during start-up: start-up abandoned, no mail processed",
                 signal.Signals(exc.args[0]).name)
        return 0
    finally:
        early.restore()


def _run(args, early: StartupSignals) -> int:
    from guard.daemon import service as daemon
    from guard.settings import load_settings

    setup_logging(args.log_level or "INFO", args.log_format or "text")
    log.debug("guard run: starting")
    if early.abandon("starting"):
        return 0
    settings = load_settings(args.config)
    if settings.imap is None and not settings.accounts:
        where = f"{args.config} has" if args.config else "the bundled sample institute (no --config) has"
        raise ConfigError(f"guard run needs an [imap] section (or [[accounts]]) in the configuration, and {where} "
                          "none: give your configuration with --config FILE (start from deploy/guard.example.toml; "
                          "check it with guard check-config --config FILE)")
    if getattr(args, "new_journal", False):
        settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(
            update={"allow_new_journal": True})})
    setup_logging(args.log_level or settings.logging.level, args.log_format or settings.logging.format)
    if early.abandon("reading the configuration"):
        return 0
    mode = "dry-run" if args.dry_run else "shadow" if args.shadow else settings.daemon.mode
    classifier = _classifier(settings, args.no_model)
    if early.abandon("loading the rules and the model"):
        return 0
    model = getattr(classifier, "model", None)

    def reloader():
        """SIGHUP: the configuration file again (events, thresholds), the rules; the model is kept."""
        from guard.classification.assemble import build_classifier

        new = load_settings(args.config)
        return new, build_classifier(new, model=model)

    from guard.daemon import supervisor as accounts

    # a signal from here until the event loop's handlers are installed: the supervisor sees it
    accounts.startup_signal = early.requested
    try:
        return accounts.run(settings, classifier, mode=mode, once=args.once, reloader=reloader)
    finally:
        accounts.startup_signal = accounts.no_startup_signal


def _prepare_workdir(workdir: Path) -> Path:
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / DEMO_MARKER).is_file():
            raise ConfigError(f"{workdir}: not empty and not a guard demo directory; give an empty or new directory "
                              "(--workdir DIR)")
        for name in DEMO_OUTPUTS:
            p = workdir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _clean_workdir(workdir: Path) -> int:
    workdir = workdir.resolve()
    if not workdir.exists():
        print(f"nothing to remove: {workdir} does not exist")
        return 0
    if not (workdir / DEMO_MARKER).is_file():
        raise ConfigError(f"{workdir}: not a guard demo directory (no {DEMO_MARKER}); not removed")
    shutil.rmtree(workdir)
    print(f"removed {workdir}")
    return 0


def _demo_messages(paths: list[str] | None) -> list[tuple[str, bytes]]:
    """(name shown, raw bytes) of each message: the bundled samples, or the user's own."""
    from guard.mail.sources import iter_sources
    from guard.paths import samples_dir

    if not paths:
        return [(p.name, p.read_bytes()) for p in sorted(samples_dir().glob("*.eml"))]
    out = []
    for src in iter_sources(list(paths)):
        if src.raw is None:
            print(f"guard demo: skipped {src.name}: {src.error}", file=sys.stderr)
            continue
        out.append((src.name, src.raw))
    if not out:
        raise ConfigError(f"{', '.join(paths)}: no messages found (give .eml files, an mbox file or a Maildir)")
    return out


def cmd_demo(args) -> int:
    import asyncio

    from guard.daemon.service import Daemon, folder_names
    from guard.daemon.executor import utc_now
    from guard.daemon.journal import Journal
    from guard.daemon.mailbox import MaildirMailbox
    from guard.daemon.mailer import FileMailer
    from guard.settings import load_settings

    if args.clean:
        return _clean_workdir(args.workdir)
    setup_logging(args.log_level)
    settings = load_settings(args.config)
    messages = _demo_messages(args.messages)
    classifier = _classifier(settings, args.no_model)
    workdir = _prepare_workdir(args.workdir)
    (workdir / DEMO_MARKER).write_text("created by guard demo (guard demo --clean removes this directory)\n")
    maildir, outbox = workdir / "Maildir", workdir / "outbox"

    journal = Journal(workdir / "journal.sqlite3")
    mailbox = MaildirMailbox(maildir, account="demo", folders=folder_names(settings))
    # the first start is now: the messages below "arrive" after it, as new mail would
    journal.mailbox_state(mailbox.account, mailbox.mailbox, utc_now())
    new = maildir / "new"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    base = int(time.time())
    for i, (name, raw) in enumerate(messages):
        fname = f"{base}.M{i:06d}P0.guard-demo"
        (new / fname).write_bytes(raw)
        names[fname] = name
    mailer = FileMailer(outbox)
    daemon = Daemon(settings, classifier=classifier, mode="live", once=True, mailbox=mailbox, mailer=mailer,
                    journal=journal)
    status = asyncio.run(daemon.run())
    uid_to_file = {}
    state = json.loads((maildir / "guard-uids.json").read_text())
    for fname, uid in state["uids"].items():
        uid_to_file[uid] = names.get(fname, fname)
    what = "sample messages" if not args.messages else "of your messages"
    try:
        _print_demo(daemon.executor.outcomes, uid_to_file, mailer.written, workdir, maildir, what)
        _demo_digest(settings, journal, workdir)
    finally:
        journal.close()
    _print_next_steps(workdir, args)
    return status


def _demo_digest(settings, journal, workdir: Path) -> None:
    """The coordinator's side: the digest of this run, printed (text) and written beside the outbox (HTML)."""
    from guard.daemon.executor import utc_now
    from guard.daemon.service import load_policy_and_templates
    from guard.digest.send import DigestService

    _, renderer = load_policy_and_templates(settings)
    r = DigestService(settings, journal, None, renderer, clock=utc_now).preview()
    (workdir / "digest.txt").write_text(f"Subject: {r.subject}\n\n{r.text}", encoding="utf-8")
    (workdir / "digest.html").write_text(r.html, encoding="utf-8")
    print(f"\n== the coordinator's digest of this run (to {settings.institute.coordinator.address}; "
          f"HTML: {workdir / 'digest.html'}) ==\n")
    print(f"Subject: {r.subject}\n")
    print(r.text.rstrip("\n"))


def _print_next_steps(workdir: Path, args) -> None:
    here = _shown(workdir)
    print()
    print(f"everything is in {here}/ (outbox/, Maildir/, digest.txt, digest.html, journal.sqlite3)")
    print(f"  the digest again:    guard digest --preview --journal {here}/journal.sqlite3 [--html]")
    if not args.messages:
        print("  on your own mail:    guard demo --messages PATH   (a directory of .eml files, an mbox file or a Maildir)")
    clean = "guard demo --clean" + ("" if args.workdir == DEFAULT_DEMO_DIR else f" --workdir {here}")
    print(f"  remove it:           {clean}")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _print_demo(outcomes, uid_to_file, written, workdir: Path, maildir: Path, what: str = "sample messages") -> None:
    rows = []
    for o in sorted(outcomes, key=lambda o: o.uid):
        action = ", ".join(o.sent) if o.sent else "nothing sent"
        where = o.folder or "left in inbox"
        rows.append((uid_to_file.get(o.uid, str(o.uid)), o.category or o.state, f"{action}; {where}",
                     "; ".join(o.suppressed)))
    w0 = max([len("message")] + [len(r[0]) for r in rows])
    w1 = max([len("category")] + [len(r[1]) for r in rows])
    print(f"guard demo: {len(rows)} {what} in {maildir}\n")
    print(f"{'message':<{w0}}  {'category':<{w1}}  action")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 40}")
    for name, cat, action, suppressed in rows:
        print(f"{name:<{w0}}  {cat:<{w1}}  {action}")
        if suppressed:
            print(f"{'':<{w0}}  {'':<{w1}}    held back: {suppressed}")
    print()
    if written:
        print(f"replies and forwards written to {workdir / 'outbox'}:")
        for p in written:
            print(f"  {p.name}")
    else:
        print("no replies or forwards were written")
    print(f"\nfiled messages: {maildir} (Maildir++ folders .Guard.*); journal: {workdir / 'journal.sqlite3'}")
