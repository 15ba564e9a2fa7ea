"""The IO edge: the daemon and its supervisor, the executor that drives one mailbox, and the only
modules that touch the world (IMAP mailbox, SMTP mailer, SQLite journal, OAuth2, health and
metrics). May import every package but ``cli``."""
