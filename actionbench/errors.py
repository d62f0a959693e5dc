"""The one error type the harness shows to users as a plain message, never a traceback."""


class UserError(ValueError):
    """Bad input from the user (config value, path, manifest, image): says what and where, and what is valid."""


def check_choice(key: str, value, choices, hint: str | None = None) -> None:
    """Fail with one message naming the valid choices (then `hint`, if any) when `value` is not among them."""
    if value not in choices:
        message = f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}"
        raise UserError(f"{message}\n{hint}" if hint else message)


def check_positive(group: str, **values) -> None:
    """Fail on the first value that is not a positive number, naming its config key."""
    for key, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise UserError(f"{group + '.' if group else ''}{key}={value!r} must be a positive number")


def check_probability(group: str, **values) -> None:
    for key, value in values.items():
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise UserError(f"{group}.{key}={value!r} must lie in [0, 1]")
