"""The coordinator's digest: schedule and build (pure, ``build``), campaign grouping, the journal
tables it reads (``records``) and sending it (``send``). Imports ``mail``, ``classification``,
``respond`` and the journal of ``daemon``; never ``cli``."""
