"""The ``guard`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guard.errors import GuardError


def _load(args):
    from guard.classification.assemble import build_classifier
    from guard.settings import load_settings

    settings = load_settings(args.config)
    model = None
    if not getattr(args, "no_model", False):
        from guard.classification.model_loader import load_default_model

        model = load_default_model(settings)
    return settings, build_classifier(settings, model=model)


def cmd_classify(args) -> int:
    from guard.mail.message import parse
    from guard.mail.sources import iter_sources

    _, classifier = _load(args)
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
            record = {"source": src.name, "message_id": msg.message_id, **verdict.to_dict()}
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="guard", description="Mail guard for an institute's events office.")
    p.add_argument("--config", "-c", type=Path, default=None, help="configuration TOML (default: bundled sample institute)")
    p.add_argument("--version", action=_Version, help="show guard's version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("classify", help="classify messages from files, directories, mbox files or - (stdin)")
    c.add_argument("paths", nargs="+")
    c.add_argument("--json", action="store_true", help="one JSON object per message per line")
    c.add_argument("--explain", action="store_true", help="show every reason")
    c.add_argument("--no-model", action="store_true", help="rules only")
    c.set_defaults(func=cmd_classify)

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


def main(argv: list[str] | None = None) -> int:
    from guard.cli.daemon import early_signals, early_signals_parsed

    early_signals(sys.argv[1:] if argv is None else list(argv))  # guard run: SIGTERM during start-up
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BaseException:  # --help, a usage error (SystemExit): not a run
        early_signals_parsed(None)
        raise
    early_signals_parsed(args.command)
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
    sys.exit(main())
