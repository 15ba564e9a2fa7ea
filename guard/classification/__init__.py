"""From a parsed message to a :class:`~guard.classification.verdict.Verdict`: rules and their
matchers, the model and its features, the decision. Pure: imports ``guard.mail`` and the top level
(settings, errors, paths) only; never ``respond``, ``daemon``, ``digest``, ``learning`` or ``cli``."""
