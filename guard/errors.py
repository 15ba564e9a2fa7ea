"""guard's exceptions.

    GuardError
    ├── ConfigError        bad configuration: refuses to start, names file, key and reason
    ├── RuleError          bad rule file: refuses to start, names file, rule id and reason
    ├── ModelError         missing, mismatched or tampered model artefact
    ├── TransientIOError   a network or server failure worth retrying (SMTP 4xx, IMAP drop)
    └── PermanentIOError   a failure retrying will not fix (SMTP 5xx, auth refused)
"""


from pathlib import Path


class GuardError(Exception):
    """Base of every error guard raises on purpose."""


class ConfigError(GuardError):
    pass


class RuleError(GuardError):
    pass


class ModelError(GuardError):
    pass


class TransientIOError(GuardError):
    pass


class PermanentIOError(GuardError):
    pass


def read_toml(path: Path, error: type[GuardError] = ConfigError) -> dict:
    """A TOML file's table, or ``error("<path>: cannot read / not valid TOML: ...")``."""
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
