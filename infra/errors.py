"""Errors raised by infra with a message a user can act on."""


class InfraError(RuntimeError):
    """A service could not be installed, started or reached.

    The message names the setting or tool at fault and the fix, e.g.
    ``"port 9092 (LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS) is taken by pid 123 (java): stop it or pick
    another port"``.
    """
