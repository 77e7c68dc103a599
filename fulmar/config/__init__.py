"""Fulmar's configuration: main.cf values, typed and expanded.

NAME
    fulmar.config - load main.cf (and the master.cf service names)

SYNOPSIS
    from fulmar import config
    cfg = config.load(config_dir=None, overrides=None)
    cfg.get("message_size_limit") -> int      # typed, expanded; cached
    cfg["myhostname"]                          # same as get
    cfg.raw("smtpd_banner") -> str             # unexpanded text
    cfg.expand("$myhostname ESMTP") -> str
    cfg.with_overrides({"name": "value"}, origin=None) -> Config
    cfg.transport_param("smtp", "destination_concurrency_limit") -> typed
    cfg.is_set(name), cfg.param(name), cfg.location(name), cfg.names()
    cfg.config_dir, cfg.main_cf_path, cfg.warnings
    config.unimplemented(cfg, services=()) -> ["path:line: ...", ...]
    config.ConfigError

DESCRIPTION
    load() reads $config_dir/main.cf (config_dir: the argument, else
    $MAIL_CONFIG, else /etc/postfix).  A missing main.cf means all defaults.
    Every parameter set in main.cf (or by overrides) is expanded and
    converted at load time, so a bad value stops the load with one error;
    daemons then read values with get(), which caches the typed result (the
    Config never changes: with_overrides() makes a new one).

    A value comes from, in order: overrides (master.cf -o, postconf -o),
    main.cf (last assignment wins), the registry default (fulmar.config.params;
    some defaults are computed from the host).  Names the registry does not
    know are still accepted, without a warning, when they are
    <transport>_<suffix> per-transport names (see params.TRANSPORT_SUFFIXES;
    the transport must be a master.cf service when master.cf exists), when
    they are listed in $smtpd_restriction_classes, or when main.cf or
    master.cf reference them as $name (Postfix's user-defined parameters).
    Any other name gives the warning "path:line: unknown parameter name: N"
    in cfg.warnings; warnings never stop a load.  Callers print each with
    their own "warning: " prefix.

    unimplemented() lists the settings Fulmar accepts but ignores: each
    main.cf assignment, and each master.cf `-o` of the given services
    (fulmar.config.mastercf.Service), that sets a name in
    params.NOT_IMPLEMENTED to other than its default, as "path:line:
    parameter N is not implemented by Fulmar: the setting has no effect".
    master logs them at start and reload, `postfix check` prints them;
    they are not in cfg.warnings, so postconf stays quiet about them.

    Raw parameters (Postfix's forward_path, mailbox_command, luser_relay and
    a few filters) are never expanded by get(): their consumers expand
    them with their own macros.

DIAGNOSTICS
    ConfigError, one line: "path:line: bad numerical configuration: N = V",
    "path:line: parameter N: expansion loop: a -> b -> a", and the other
    messages of fulmar.config.maincf.  get() of a name that is not a
    parameter at all raises KeyError (a programming error, not a config one).
"""

from __future__ import annotations

import os
TYPE_CHECKING = False          # typing costs ~3 ms of start-up; annotations only
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping

from fulmar.config.maincf import (Assignment, ConfigError, convert, expand_text,
                                  read_main_cf, referenced_names, split_list)
from fulmar.config.params import (NOT_IMPLEMENTED, PARAMS, Param, split_transport_name,
                                  transport_param_spec)

__all__ = ["load", "Config", "ConfigError", "DEFAULT_CONFIG_DIR", "RAW_PARAMS"]

DEFAULT_CONFIG_DIR = "/etc/postfix"

# Values that their consumers expand themselves (Postfix's "raw" parameters).
RAW_PARAMS = frozenset({
    "forward_path", "mailbox_command", "luser_relay", "default_rbl_reply",
    "smtpd_expansion_filter", "command_expansion_filter",
    "execution_directory_expansion_filter", "smtpd_reject_footer",
    "postscreen_reject_footer", "smtpd_proxy_ehlo",
})


def default_config_dir() -> str:
    return os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR


def _user_param(name: str) -> Param:
    return Param(name, "str", "", "user", "user-defined parameter")


class Config:
    """An immutable view of one configuration (see the module docstring)."""

    def __init__(self, config_dir: str, assignments: Mapping[str, Assignment],
                 overrides: Mapping[str, str] | None = None, *,
                 service_names: Iterable[str] | None = None,
                 user_names: Iterable[str] = (),
                 warnings: list[str] | None = None,
                 all_assignments: list[Assignment] | None = None) -> None:
        self.config_dir = config_dir
        self.main_cf_path = os.path.join(config_dir, "main.cf")
        self.warnings: list[str] = list(warnings or [])
        self._assign = dict(assignments)
        self._all_assign = list(all_assignments if all_assignments is not None
                                else assignments.values())
        self._over = dict(overrides or {})
        self._services = None if service_names is None else frozenset(service_names)
        self._user = set(user_names)
        self._typed: dict[str, Any] = {}
        self._expanded: dict[str, str] = {}
        self._raw: dict[str, str] = {}
        self._stack: list[str] = []
        self._origin: dict[str, str] = {}     # override name -> where it came from
        for text in (self._over.get("smtpd_restriction_classes"),
                     getattr(self._assign.get("smtpd_restriction_classes"), "value", None)):
            if text:
                self._user.update(split_list(text))

    # --- the registry, as this configuration sees it ---------------------
    def param(self, name: str) -> Param | None:
        """The Param of `name`, including per-transport and user-defined ones."""
        p = PARAMS.get(name)
        if p is not None:
            return p
        split = split_transport_name(name)
        if split is not None and (self._services is None or split[0] in self._services):
            return transport_param_spec(name)
        if name in self._user:
            return _user_param(name)
        return None

    def names(self) -> list[str]:
        """Every parameter name postconf shows: registry, plus set ones."""
        names = set(PARAMS)
        for name in list(self._assign) + list(self._over):
            if self.param(name) is not None:
                names.add(name)
        return sorted(names)

    def is_set(self, name: str) -> bool:
        return name in self._over or name in self._assign

    def location(self, name: str) -> str | None:
        """"path:line" of the main.cf assignment in force, if any."""
        a = self._assign.get(name)
        return a.where if a and name not in self._over else None

    # --- values --------------------------------------------------------------
    def default_raw(self, name: str) -> str:
        """The built-in default text (computed defaults computed)."""
        p = self.param(name)
        if p is None:
            raise KeyError(name)
        if p.compute is not None:
            return p.compute(self)
        return p.default

    def raw(self, name: str) -> str:
        """Unexpanded text: override, else main.cf, else default."""
        try:
            return self._raw[name]
        except KeyError:
            pass
        if name in self._over:
            value = self._over[name]
        elif name in self._assign:
            value = self._assign[name].value
        else:
            value = self.default_raw(name)
        self._raw[name] = value
        return value

    def _lookup(self, name: str) -> str:
        """Expanded value of a parameter for $name; unknown names are empty."""
        try:
            return self._expanded[name]
        except KeyError:
            pass
        if name in self._stack:
            chain = " -> ".join(self._stack[self._stack.index(name):] + [name])
            raise ConfigError(f"parameter {self._stack[0]}: expansion loop: {chain}")
        if self.param(name) is None and not self.is_set(name):
            return ""
        self._stack.append(name)
        try:
            text = self.raw(name)
            if name not in RAW_PARAMS:
                text = expand_text(text, self._lookup)
        finally:
            self._stack.pop()
        self._expanded[name] = text
        return text

    def _where(self, name: str) -> str:
        loc = self.location(name)
        if loc:
            return loc
        if name in self._over:
            return self._origin.get(name, "override")
        return self.main_cf_path

    def get(self, name: str) -> Any:
        """The typed, expanded value of parameter `name` (cached)."""
        try:
            return self._typed[name]
        except KeyError:
            pass
        p = self.param(name)
        if p is None:
            raise KeyError(name)
        try:
            text = self._lookup(name)
            value = convert(p, text)
        except ConfigError as e:
            self._stack.clear()
            raise ConfigError(f"{self._where(name)}: {e}") from None
        self._typed[name] = value
        return value

    __getitem__ = get

    def expand(self, text: str) -> str:
        """Expand $name references in arbitrary text."""
        try:
            return expand_text(text, self._lookup)
        except ConfigError:
            self._stack.clear()
            raise

    def transport_param(self, transport: str, suffix: str) -> Any:
        """<transport>_<suffix> when set or registered, else its fallback."""
        name = f"{transport}_{suffix}"
        if name in PARAMS or self.is_set(name):
            return self.get(name)
        spec = transport_param_spec(name)
        if spec is None:
            raise KeyError(name)
        return self.get(spec.default[1:])

    def with_overrides(self, overrides: Mapping[str, str],
                       origin: str | None = None) -> "Config":
        """A new Config with `overrides` on top (master.cf -o); validated."""
        merged = dict(self._over)
        merged.update(overrides)
        new = Config(self.config_dir, self._assign, merged,
                     service_names=self._services, user_names=self._user,
                     warnings=self.warnings, all_assignments=self._all_assign)
        new._origin.update(self._origin)
        for name in overrides:
            new._origin[name] = origin or "override"
        for name in overrides:
            if new.param(name) is None:
                new._user.add(name)
                new.warnings.append(f"{origin or 'override'}: unknown parameter name: {name}")
        new.validate(overrides)
        return new

    def validate(self, names: Iterable[str] | None = None) -> None:
        """Expand and convert each set parameter (or `names`); ConfigError."""
        for name in (names if names is not None else list(self._over) + list(self._assign)):
            if self.param(name) is not None:
                self.get(name)

    def set_names(self) -> list[str]:
        """Names set in main.cf (postconf -n), sorted."""
        return sorted(self._assign)

    def defaults_only(self) -> "Config":
        """The same directory with an empty main.cf (postconf -d)."""
        return Config(self.config_dir, {}, service_names=self._services)


def load(config_dir: str | None = None,
         overrides: Mapping[str, str] | None = None) -> Config:
    """Read main.cf (and master.cf's service names) from `config_dir`."""
    config_dir = config_dir or default_config_dir()
    warnings: list[str] = []
    main_cf = os.path.join(config_dir, "main.cf")
    if not os.path.isdir(config_dir):
        # A mistyped -c or MAIL_CONFIG must not fall back to the defaults
        # (and so to the system's /var/spool/postfix): fail as Postfix does.
        raise ConfigError(f"open {main_cf}: No such file or directory")
    all_assign = read_main_cf(main_cf, warnings)
    assign: dict[str, Assignment] = {}
    referenced: set[str] = set()
    for a in all_assign:
        assign.pop(a.name, None)
        assign[a.name] = a
        referenced |= referenced_names(a.value)
    service_names = None
    master_cf = os.path.join(config_dir, "master.cf")
    if os.path.exists(master_cf):
        from fulmar.config.mastercf import parse_master_cf
        try:
            services = parse_master_cf(master_cf)
        except ConfigError:
            services = []   # master reports master.cf errors itself
        else:
            service_names = {s.name for s in services}
        for s in services:
            for value in s.overrides.values():
                referenced |= referenced_names(value)
    over = dict(overrides or {})
    for value in over.values():
        referenced |= referenced_names(value)
    cfg = Config(config_dir, assign, over, service_names=service_names,
                 user_names=referenced, warnings=warnings, all_assignments=all_assign)
    for a in all_assign:
        if assign[a.name] is a and cfg.param(a.name) is None:
            warnings.append(f"{a.where}: unknown parameter name: {a.name}")
    cfg.warnings = warnings
    cfg.validate()
    return cfg


def unimplemented(cfg: Config, services: Iterable = ()) -> list[str]:
    """Warnings for settings Fulmar ignores (module docstring)."""
    out: list[str] = []
    defaults = cfg.defaults_only()
    for name in sorted(NOT_IMPLEMENTED):
        if cfg.is_set(name) and cfg.get(name) != defaults.get(name):
            out.append(_unimplemented_text(cfg.location(name) or "override", name))
    for spec in services:
        for name, value in spec.overrides.items():
            if name not in NOT_IMPLEMENTED:
                continue
            try:
                changed = cfg.with_overrides({name: value}).get(name) != defaults.get(name)
            except ConfigError:
                changed = True      # a bad value: master reports it when it starts the service
            if changed:
                out.append(_unimplemented_text(f"{spec.path}:{spec.lineno}: service {spec.name}",
                                               name))
    return out


def _unimplemented_text(where: str, name: str) -> str:
    return f"{where}: parameter {name} is not implemented by Fulmar: the setting has no effect"
