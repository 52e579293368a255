"""The one exception type for bad input: its message is the sentence the user sees."""


class InputError(Exception):
    """Bad input or state the user can fix; str(error) names the file, what is wrong and the fix. `exit_code` is
    the command's exit status when it is refused."""

    exit_code = 1
