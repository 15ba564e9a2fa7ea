"""The ``guard`` command line."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

from guard.errors import GuardError

# OpenBLAS (numpy's) parks its worker threads only after spinning for 2^28 cycles when it starts:
# about 40 ms of CPU and of wall time on a 2-core host at every `guard classify`. 2^4 cycles parks
# them at once. The number of threads, and so every result, is unchanged; a value set by the
# caller wins. Here, before anything imports numpy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _load(args):
    with _no_plugin_search():
        from guard.classification.assemble import build_classifier
        from guard.settings import load_settings

        settings = load_settings(args.config)
        model = None
        if not getattr(args, "no_model", False):
            from guard.classification.model_loader import load_default_model

            model = load_default_model(settings)
        return settings, build_classifier(settings, model=model)


class _no_plugin_search:
    """pydantic looks for plugins (the ``pydantic`` entry-point group) when it builds its first
    validator: it imports importlib.metadata and reads every installed distribution's entry points,
    about 20 ms of a one-shot classify. Whether any distribution offers one is kept in guard's cache
    under a name made of the import path's directories and their modification times (installing or
    removing a distribution changes its directory's); when none does, pydantic is told not to look
    (``PYDANTIC_DISABLE_PLUGINS``) while classify starts -- the same outcome, no plugin -- and the
    variable is as it was afterwards. With a plugin installed, or without a cache, nothing changes."""

    def __enter__(self):
        self.saved = None
        if "PYDANTIC_DISABLE_PLUGINS" in os.environ or "pydantic.plugin._loader" in sys.modules:
            return self
        from guard import cache

        where = _plugin_cache_entry()
        kept = cache.read_json(where)
        if kept is None and where is not None:
            from importlib.metadata import entry_points

            kept = sorted(f"{ep.name}={ep.value}" for ep in entry_points(group="pydantic"))
            cache.write_json(where, kept)
        if kept == []:
            self.saved = os.environ.get("PYDANTIC_DISABLE_PLUGINS", _UNSET)
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
        return self

    def __exit__(self, *exc):
        if self.saved is _UNSET:
            os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        elif self.saved is not None:  # pragma: no cover - set only when it was absent
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = self.saved
        return False


_UNSET = object()


def _plugin_cache_entry():
    """Named by the import path's directories (size and time: installing a distribution changes its directory's)."""
    from guard import cache

    return cache.entry("pydantic-plugins", Path(sys.prefix), 1, cache.code_key(*(d or "." for d in sys.path)))


def cmd_classify(args) -> int:
    from guard.mail.message import parse
    from guard.mail.sources import iter_sources

    _, classifier = _load(args)
    _resume_gc()  # start-up done (see main)
    out = sys.stdout
    for src in iter_sources(args.paths):
        if src.raw is None:
            if args.json:
                out.write(json.dumps({"source": src.name, "error": src.error}, ensure_ascii=False) + "\n")
            else:
                print(f"{src.name}: error: {src.error}", file=sys.stderr)
            continue
        msg = parse(src.raw)
        verdict = classifier.classify(msg)
        if args.json:
            record = {"source": src.name, "message_id": msg.message_id, **verdict.to_dict(), "language": msg.language}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            _print_human(src.name, msg, verdict, args.explain)
    out.flush()
    return 0


def _print_human(name, msg, verdict, explain: bool) -> None:
    subject = msg.subject.replace("\n", " ")[:70]
    # the score is the scam score (scam-tagged reasons, model included), whatever the category
    line = f"{name}: {verdict.category} (scam score {verdict.score:.1f})  {subject!r}"
    if verdict.inner is not None:
        line += f"  [forwarded: {verdict.inner.category}, scam score {verdict.inner.score:.1f}]"
    if verdict.paid:
        line += "  [reporter may have paid]"
    print(line)
    if explain:
        if verdict.scores:
            print("    scores by tag: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(verdict.scores.items())))
        for r in verdict.reasons:
            print(f"    {r.score:+5.1f}  {r.rule}: {r.description}")
        if verdict.inner is not None:
            for r in verdict.inner.reasons:
                print(f"    inner {r.score:+5.1f}  {r.rule}: {r.description}")
        if verdict.model_p is not None:
            print(f"    model scam probability {verdict.model_p:.3f}")
        for d in verdict.defects:
            print(f"    defect: {d}")


def cmd_check_config(args) -> int:
    from guard.classification.assemble import load_rules
    from guard.settings import load_settings

    settings = load_settings(args.config)
    ruleset = load_rules(settings)
    print(f"configuration OK: {args.config or 'bundled sample institute'}")
    print(f"  institute: {settings.institute.name} ({', '.join(settings.official_domains())})")
    print(f"  coordinator: {settings.institute.coordinator.name} <{settings.institute.coordinator.address}>")
    print(f"  events: {len(settings.events)}")
    print(f"  rules: {len(ruleset.rules)} from {len(ruleset.files)} files")
    from guard.daemon.service import load_policy_and_templates

    policy, _ = load_policy_and_templates(settings)
    print(f"  policy and templates: OK ({len(policy.rows)} policy rows)")
    if not getattr(args, "no_model", False):
        from guard.classification.model_loader import describe, find_intent, find_model

        print(f"  scam model: {describe(find_model(settings)[1])}")
        print(f"  intent model: {describe(find_intent(settings)[1])}")
    return 0


def build_parser(*, only_classify: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``only_classify``: the same parser with only ``classify`` (see _parse)."""
    p = (_LightParser if only_classify else argparse.ArgumentParser)(
        prog="guard", description="Mail guard for an institute's events office.")
    p.add_argument("--config", "-c", type=Path, default=None, help="configuration TOML (default: bundled sample institute)")
    p.add_argument("--version", action=_Version, help="show guard's version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("classify", help="classify messages from files, directories, mbox files or - (stdin)")
    c.add_argument("paths", nargs="+")
    c.add_argument("--json", action="store_true", help="one JSON object per message per line")
    c.add_argument("--explain", action="store_true", help="show every reason")
    c.add_argument("--no-model", action="store_true", help="rules only")
    c.set_defaults(func=cmd_classify)

    if not only_classify:
        k = sub.add_parser("check-config", help="validate the configuration, rules and model; explain every error")
        k.add_argument("--no-model", action="store_true")
        k.set_defaults(func=cmd_check_config)

        from guard.cli import daemon as cli_daemon

        from guard.cli import model as cli_model

        from guard.cli import templates as cli_templates

        cli_model.add_commands(sub)
        cli_daemon.add_commands(sub)
        cli_templates.add_commands(sub)
    for command in sub.choices.values():  # `guard check-config --config FILE` as well as `guard --config FILE check-config`
        command.add_argument("--config", "-c", type=Path, default=argparse.SUPPRESS,
                             help="configuration TOML (default: bundled sample institute)")
    return p


class _NotLight(Exception):
    """The command line is not a plain ``guard classify ...``: parse it with the whole parser."""


class _LightParser(argparse.ArgumentParser):
    """Never prints or exits: any usage error goes back to _parse, which asks the whole parser."""

    def error(self, message):
        raise _NotLight(message)

    def exit(self, status=0, message=None):
        raise _NotLight(message)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """``guard classify ...`` is parsed without importing the other commands' modules (start-up
    time of a one-shot classify): by a parser that has only ``classify`` and otherwise is the
    whole one, and so gives the same result. Anything else -- another command, ``--help``,
    ``--version``, a usage error -- goes to the whole parser, which prints and exits as it always did."""
    words = sys.argv[1:] if argv is None else list(argv)
    if "classify" in words and not any(w in ("-h", "--help", "--version") or w.startswith("--v") for w in words):
        try:
            args = build_parser(only_classify=True).parse_args(words)
            if args.command == "classify":
                return args
        except _NotLight:
            pass
    return build_parser().parse_args(argv)


class _Version(argparse.Action):
    """``--version``, the installed distribution's version looked up only when asked (start-up time)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"guard {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("guard")
    except PackageNotFoundError:  # pragma: no cover - a bare checkout on sys.path
        return "unknown (not installed)"


_GC_PAUSED = False


def _pause_gc() -> None:
    """No cyclic garbage collection while guard starts: the imports and the loading of the settings,
    rules and models allocate hundreds of thousands of long-lived objects, and the collector would
    walk them again and again (about a tenth of a one-shot classify's CPU time). Collection resumes
    (_resume_gc) before any message is read, for every other command right after parsing; garbage
    cycles made while starting go at its first collection."""
    global _GC_PAUSED
    if gc.isenabled():
        gc.disable()
        _GC_PAUSED = True


def _resume_gc() -> None:
    global _GC_PAUSED
    if _GC_PAUSED:
        _GC_PAUSED = False
        gc.enable()


def entry() -> None:
    """The ``guard`` executable (and ``python -m guard``): :func:`main`, then exit.

    Before the interpreter tears itself down, the heap is frozen (``gc.freeze``): the final
    collection at exit would otherwise walk every object the imports, settings, rules and models
    made, only to free memory the operating system takes back anyway -- about a quarter of a
    one-shot ``guard classify``'s wall time here. Files, ``atexit`` handlers and logging are closed
    as always. Only the executable does this: a caller of :func:`main` in a running process (a test)
    keeps its collector as it was."""
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    _pause_gc()
    try:
        return _main(argv)
    finally:
        _resume_gc()


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if "run" in words or "guard.cli.daemon" in sys.modules:  # else there is nothing to record or restore
        from guard.cli.daemon import early_signals, early_signals_parsed

        early_signals(words)  # guard run: SIGTERM during start-up
    else:
        early_signals_parsed = None
    try:
        args = _parse(argv)
    except BaseException:  # --help, a usage error (SystemExit): not a run
        if early_signals_parsed is not None:
            early_signals_parsed(None)
        raise
    if early_signals_parsed is not None:
        early_signals_parsed(args.command)
    if args.command != "classify":  # the other commands start as they always did
        _resume_gc()
    try:
        return args.func(args)
    except GuardError as exc:
        print(f"guard: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    entry()
