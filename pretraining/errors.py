"""The one exception train.py's refusals and faults end with: one `error: ...` line, no traceback."""

from __future__ import annotations


class RunError(SystemExit):
    """A refusal or a fault that ends the run with one `error: ...` line and no traceback (see `main`): exit status 2
    when the options, the data or the output folder are wrong, 1 when training itself failed."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message if message.startswith("error:") else f"error: {message}")
        self.exit_code = exit_code
