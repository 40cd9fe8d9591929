"""The watchdog process: ``launch`` (started detached from the session, stopped at its end),
``main`` (the process: a timer server alive while the session's process is), ``escalation``
(the ladder for one expired scope: stacks, interrupt, tree kill, hard kill)."""
