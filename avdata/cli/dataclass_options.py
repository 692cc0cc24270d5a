"""Generate Typer options from an options dataclass, so each option is declared once.

A field's CLI is read from its `dataclasses.field(metadata=...)`, written with `avdata.option_fields.opt`
(in the library, so that the library never imports the CLI):

    @app.command("demo")
    @options_command(Options)
    def demo(opts: Options, out: Path = typer.Option(..., "--out")) -> None:
        ...   # opts is an Options built from the flags; `out` is an ordinary Typer option

Metadata keys: see `avdata.option_fields`. Types: str, int, float, Path, `X | None` of these (default
None), bool (as --x/--no-x, or a plain --x with `negatable=False`) and list[X] (a comma-separated string).
Choices and list items are checked here rather than by Typer's Literal support, so the errors name the flag
on every Typer version the project allows.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Iterable, Mapping

import typer

from avdata.errors import AvdataError
from avdata.option_fields import META_KEYS, flag_of


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None` / `Optional[X]`, else (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...  # Typer's marker of a required option


def _checker(flag: str, choices: tuple | None, item_type: Any | None) -> Callable[[Any], Any] | None:
    """A Typer callback that splits list values and checks choices, failing with the flag's name."""
    if choices is None and item_type is None:
        return None

    def check(value: Any) -> Any:
        if value is None:
            return None
        if item_type is not None:
            items = [s.strip() for s in str(value).split(",") if s.strip()]
            try:
                value = [item_type(s) for s in items]
            except ValueError:
                raise typer.BadParameter(f"{value!r} is not a comma-separated list of {item_type.__name__}",
                                         param_hint=f"'--{flag}'") from None
        for v in value if item_type is not None else [value]:
            if choices is not None and v not in choices:
                allowed = ", ".join(str(c) for c in choices)
                raise typer.BadParameter(f"{v!r} is not one of: {allowed}", param_hint=f"'--{flag}'")
        return value

    return check


def typer_params(dc_type: type, *, exclude: Iterable[str] = (),
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter with a `typer.Option` per field of `dc_type` (but `exclude`); `overrides`
    maps a field name to metadata keys (and "default") that replace the dataclass's for this command."""
    for name, over in (overrides or {}).items():
        unknown = set(over) - set(META_KEYS) - {"default"}
        if unknown:
            raise ValueError(f"overrides for {name}: unknown keys {sorted(unknown)}; use {META_KEYS} or default")
    exclude = set(exclude)
    hints = typing.get_type_hints(dc_type)  # resolves `from __future__ import annotations` strings
    params = []
    for f in dataclasses.fields(dc_type):
        if f.name in exclude or not f.init:
            continue
        meta = {**f.metadata, **(overrides or {}).get(f.name, {})}
        default = meta.get("default", _default(f))
        flag = (meta.get("flag") or f.name.replace("_", "-")).lstrip("-")
        base, optional = _unwrap_optional(hints[f.name])
        choices = tuple(meta["choices"]) if meta.get("choices") else None
        help_text = meta.get("help") or f"Sets {dc_type.__name__}.{f.name}."
        if choices:
            help_text += f" One of: {', '.join(map(str, choices))}."
        metavar = "[" + "|".join(map(str, choices)) + "]" if choices else None
        item_type = None
        annotation: Any = hints[f.name]
        if typing.get_origin(base) is list:
            item_type = (typing.get_args(base) or (str,))[0]
            annotation = str | None if optional or default is None else str
            if isinstance(default, list):
                default = ",".join(map(str, default))
            help_text += " Comma-separated."
            metavar = f"{item_type.__name__.upper()},..."
        decls = [f"--{flag}/--no-{flag}" if base is bool and meta.get("negatable", True) else f"--{flag}"]
        if meta.get("short"):
            decls.append("-" + meta["short"].lstrip("-"))
        extra = {k: meta[k] for k in ("min", "max") if meta.get(k) is not None}
        option = typer.Option(default, *decls, help=help_text, hidden=bool(meta.get("hidden")), metavar=metavar,
                              callback=_checker(flag, choices, item_type), **extra)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=annotation))
    return params


def command_from(dc_types: type | tuple[type, ...], body: Callable[..., Any], *, exclude: Iterable[str] = (),
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Callable[..., Any]:
    """A Typer command whose flags are the fields of `dc_types` (one dataclass or several, e.g. the options
    every dataset's command takes and the dataset's own) plus `body`'s parameters after the instances; it
    calls `body(*instances, **other_values)`. `exclude` and `overrides` name fields of any of the types.
    Register it with `app.command(name)(...)`."""
    types_ = dc_types if isinstance(dc_types, tuple) else (dc_types,)
    exclude = set(exclude)
    body_params = list(inspect.signature(body, eval_str=True).parameters.values())[len(types_):]
    fields = {t: typer_params(t, exclude=exclude, overrides=overrides) for t in types_}
    seen: set[str] = {p.name for p in body_params}
    for t, params in fields.items():
        clash = seen & {p.name for p in params}
        if clash:
            raise ValueError(f"{body.__name__}: parameters {sorted(clash)} are also fields of {t.__name__}; "
                             f"rename them or exclude the fields")
        seen |= {p.name for p in params}
        required = [f.name for f in dataclasses.fields(t) if f.name in exclude and _default(f) is ...]
        if required:
            raise ValueError(f"{t.__name__}: excluded fields {required} have no default")

    def command(**values: Any) -> Any:
        given = _given_on_the_command_line(values.pop(_CTX), values)
        try:  # the dataclasses' own checks (__post_init__)
            instances = [t(**{p.name: values.pop(p.name) for p in params}) for t, params in fields.items()]
        except AvdataError as exc:
            raise typer.BadParameter(str(exc)) from None
        for instance in instances:
            _refuse_options_without_effect(instance, given)
        return body(*instances, **values)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in body_params]
    params += [p for t in types_ for p in fields[t]]
    params.append(inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__, command.__qualname__ = body.__name__, body.__qualname__
    command.__doc__, command.__module__ = body.__doc__, body.__module__
    return command


#: the parameter through which Typer hands the generated command its context (it recognises the annotation)
_CTX = "_avdata_context"


def _given_on_the_command_line(ctx: Any, values: Mapping[str, Any]) -> set[str]:
    """The parameters the user typed (or set through the environment), not left at their defaults. (By the
    source's name: newer Typer versions carry their own copy of click's ParameterSource.)"""
    sources = {name: ctx.get_parameter_source(name) for name in values}
    return {name for name, source in sources.items()
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")}


def _refuse_options_without_effect(instance: Any, given: set[str]) -> None:
    """A flag the user gave whose field `applies_when` (other field, value) does not hold would be dropped
    without a word (`--test-fraction` with `--split standard` keeps the published test split): say so."""
    for f in dataclasses.fields(instance):
        cond = f.metadata.get("applies_when")
        if f.name not in given or cond is None or getattr(instance, cond[0]) == cond[1]:
            continue
        other = next(o for o in dataclasses.fields(instance) if o.name == cond[0])
        flag, other_flag = (flag_of(x) for x in (f, other))
        if getattr(instance, f.name) is False and f.metadata.get("negatable", True):
            flag = "--no-" + flag[2:]  # as typed: --no-residual-proj
        raise typer.BadParameter(f"{flag} has an effect only with {other_flag} {cond[1]}, and this command has "
                                 f"{other_flag} {getattr(instance, cond[0])}: drop {flag}, or pass {other_flag} "
                                 f"{cond[1]}", param_hint=f"'{flag}'")


def options_command(dc_type: type | tuple[type, ...], *, exclude: Iterable[str] = (),
                    overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Callable[[Callable], Callable]:
    """Decorator form of `command_from`: put it under `@app.command(...)`."""
    return lambda body: command_from(dc_type, body, exclude=exclude, overrides=overrides)
