"""What to do about a verdict: the policy table, the reply gate, rendering, event facts and the pure
``prepare`` that turns a plan into rendered messages. Pure: imports ``guard.mail``,
``guard.classification`` and the top level; never ``daemon``, ``digest``, ``learning`` or ``cli``."""
