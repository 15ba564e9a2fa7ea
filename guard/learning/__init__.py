"""Learning from the coordinator: corrections (mail moved between Guard folders), the watchers that
run them and scheduled retraining. Imports ``mail``, ``classification``, ``respond``, ``digest`` and
the IO modules of ``daemon``; never ``cli``."""
