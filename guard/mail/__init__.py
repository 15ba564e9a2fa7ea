"""Reading messages: parsing, embedded forwards and quoted threads, sources (files, mbox, Maildir),
text helpers, language and domains. Pure: imports only the standard library, third-party parsers
and guard's top-level ``errors``/``paths``; never ``classification``, ``respond``, ``daemon``,
``digest``, ``learning`` or ``cli``."""
