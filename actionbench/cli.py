"""The tool commands' one command line: `key=value` arguments, as `actionbench.run` (a Hydra app) takes them,
checked against the keys the command declares. A command declares its keys as a dataclass (each field a key,
with its type and default; its help the comment on the field's line) and its body with `@command(Keys)`:

    python -m COMMAND --help               the command's text and keys, and nothing else (exit 0)
    python -m COMMAND key=value ...        an unknown key, a value of the wrong type, or a missing required
                                           key (???) is one line naming the valid keys (exit 2)

Bad input the command finds itself (a missing file, a method without records) it raises as a UserError: one
line, exit 2, no traceback. Arguments after `--` go to a command's `overrides` key (the runs' own overrides).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import io
import sys
import textwrap
import tokenize
from typing import NoReturn

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from actionbench.errors import UserError

HELP = ("-h", "--help")
PASSED_ON = "overrides"  # the key that receives the arguments after `--`


def command(keys: type | None = None):
    """Make `body(args)` (or `body()` for a command without keys) a command `main(argv=None)`: argv parsed
    against `keys`, `--help` answered, and a UserError reported as one line with exit status 2."""
    def wrap(body):
        @functools.wraps(body)
        def main(argv: list[str] | None = None) -> None:
            module = sys.modules[body.__module__]
            prog = program(module)
            args = parse(keys, list(sys.argv[1:] if argv is None else argv), prog, module.__doc__ or "")
            try:
                return body(args) if keys else body()
            except UserError as err:
                fail(prog, str(err))
        return main
    return wrap


def program(module) -> str:
    """`python -m NAME` of the module a command lives in (its import name also when run as __main__)."""
    spec = getattr(module, "__spec__", None)
    return f"python -m {(spec.name if spec else module.__name__).removesuffix('.__main__')}"


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse(keys: type | None, argv: list[str], prog: str, doc: str):
    """The `keys` dataclass filled from `argv` (None for a command without keys); exits 0 after printing help
    for -h/--help, exits 2 with one line for anything else that is not one of its keys' key=value."""
    own, passed_on = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    fields = {f.name: f for f in dataclasses.fields(keys)} if keys else {}
    if any(arg in HELP for arg in own):
        print(usage(keys, prog, doc))
        sys.exit(0)
    valid = f"valid keys: {', '.join(fields)}" if fields else "it takes no arguments"
    if passed_on and PASSED_ON not in fields:
        fail(prog, f"nothing is passed on after --; {valid}")
    for arg in own:
        key, sep, _ = arg.partition("=")
        if not sep or key.split(".")[0] not in fields:
            close = difflib.get_close_matches(key.lstrip("-").split(".")[0], fields, n=1)
            what = f"unknown key {key!r}" if sep else f"{arg!r} is not key=value"
            fail(prog, what + (f" (did you mean {close[0]}?)" if close else "") + f"; {valid}"
                 + (" (--help says what each means)" if fields else ""))
    if not keys:
        return None
    config = OmegaConf.structured(keys)
    for arg in own:
        key = arg.partition("=")[0]
        try:
            config = OmegaConf.merge(config, OmegaConf.from_cli([arg]))
        except (OmegaConfBaseException, yaml.YAMLError) as err:
            fail(prog, f"{arg}: {str(err).splitlines()[0]} ({key} takes {_type(fields[key.split('.')[0]])})")
    try:
        args = OmegaConf.to_object(config)
    except MissingMandatoryValue as err:
        fail(prog, f"{err.full_key} is required ({err.full_key}=...; --help says what it means)")
    if passed_on:  # as given: never read as OmegaConf's values (a run's override may hold ${...})
        getattr(args, PASSED_ON).extend(passed_on)
    return args


def usage(keys: type | None, prog: str, doc: str) -> str:
    """The help: the command's text, then each key with its default and the comment on its line."""
    head = f"usage: {prog}" + (" [key=value ...]" if keys else "")
    lines = [head, "", textwrap.dedent(doc).strip(), ""]
    if keys:
        helps = comments(keys)
        settings = {f.name: f"{f.name}={_shown(_default(f))}" for f in dataclasses.fields(keys)}
        width = min(max(map(len, settings.values())), 40)
        lines.append("keys (key=default; ??? is required):")
        for name, setting in settings.items():
            pad = " " * (width - len(setting)) if len(setting) <= width else "\n" + " " * (width + 2)
            lines.append(f"  {setting}{pad}  {helps.get(name, '')}".rstrip())
    return "\n".join(lines)


def comments(keys: type) -> dict[str, str]:
    """Each field's help: the comments on the lines of its declaration in the dataclass's source."""
    fields = {f.name for f in dataclasses.fields(keys)}
    try:
        source = textwrap.dedent(inspect.getsource(keys))
    except (OSError, TypeError):  # no source (an interactive definition): no help texts
        return {}
    helps, statement = {}, []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NEWLINE or (token.type == tokenize.NL and all(t.type == tokenize.COMMENT for t in statement)):
            code = [t.string for t in statement if t.type != tokenize.COMMENT]
            if len(code) > 1 and code[0] in fields and code[1] == ":":
                helps[code[0]] = " ".join(t.string.lstrip("#").strip() for t in statement if t.type == tokenize.COMMENT)
            statement = []
        elif token.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            statement.append(token)
    return helps


def _default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _shown(value) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_shown, value)) + "]"
    return str(value)


def _type(field: dataclasses.Field) -> str:
    """The field's type as declared, and how a list is written."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    return kind + (", written [a,b]" if "list" in kind or "tuple" in kind else "")
