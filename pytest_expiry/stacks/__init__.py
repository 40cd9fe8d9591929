"""Where every process of an expiry hangs: ``collect`` (faulthandler dumps, read when a scope
expires), ``unwinder`` (py-spy from outside), ``hook`` (the opt-in start-up hook for the
processes tests start), ``native`` (native frames before a hard kill)."""
