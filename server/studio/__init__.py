"""The database studio (``cero-api studio``): piccolo-admin over the server's database, on a
loopback port, for operators signed in with accounts made on the command line."""

#: ``cero-api studio``'s port on 127.0.0.1 unless ``--port``.
DEFAULT_PORT = 3210
#: An operator's shortest password: longer than Piccolo's minimum (6), since an operator
#: reads every user's conversations.
MIN_PASSWORD_LENGTH = 12
