"""The one error class every `srl` command turns into exit code 2 and a one-line message."""


class InputError(ValueError):
    """Bad command-line or data input; the message names the record, field and value."""
