"""Config keys renamed to the one vocabulary (`ssmbench.models`), still read for one release.

Run directories keep the config they were composed with (`.hydra/config.yaml`, and a checkpoint's
`hyper_parameters.config`); command lines in scripts keep their overrides. Both may use a key that
has since been renamed. `RENAMED` is the one table of those keys (and of their values, where the
values were renamed too); two functions apply it:

    migrate_config(cfg)           a stored config (DictConfig or dict), migrated in place and returned
    migrate_overrides(overrides)  command-line overrides (key=value, +key=value, ++key=value, ~key),
                                  migrated into a new list

Each old key found is one warning line on stderr, naming the old and the new key and value, and
that the old name will be removed in the next release. The old names are read by this release only:
when it is over, delete RENAMED's rows (and this module with the last of them).

No `_target_` has moved: the nrnn mixer became a package (ssmbench/models/nrnn/) that still exports
ssmbench.models.nrnn.NewtonRNNMixer, so stored configs instantiate as they are.

Model keys added since (`ADDED`) are absent from older stored configs; `migrate_config` writes them in
with the value that builds the model those configs were trained with (silently: nothing was renamed),
so an old checkpoint passes `ckpt_path=`'s model check and `resume=` rebuilds the same model.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf, open_dict

from ssmbench.errors import UserError


def lr_from_factor(factor: Any) -> str:
    """The LRU's old relative `lr_factor` as the absolute `ssm_lr`: factor x the optimizer's lr."""
    return f"${{mul:${{optimizer.lr}},{factor}}}"


@dataclass(frozen=True)
class Renamed:
    """One renamed key: `old` -> `new` (dotted keys of the composed config). The value is kept, or
    renamed by `values` (values not listed are kept), or rewritten by `convert`."""

    old: str
    new: str
    values: Mapping[str, str] = field(default_factory=dict)
    convert: Callable[[Any], Any] | None = None

    def new_value(self, value: Any) -> Any:
        if self.convert is not None:
            return self.convert(value)
        return self.values.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Added:
    """A model key added later: `value` (as written, interpolations as ${...}) gives the behaviour a
    config without it had; only for mixers built by `mixer` when it is given."""

    key: str
    value: Any
    mixer: str | None = None


BACKBONE = "ssmbench.models.backbone.SequenceModel"
S4_MIXER = "ssmbench.models.s4.S4Mixer"
DELTANET_MIXER = "ssmbench.models.deltanet.DeltaNetMixer"
ADDED = (
    Added("model.decoder", "linear"),
    Added("model.tie_dropout", False),
    Added("model.mixer.dt_transform", "exp", S4_MIXER),
    Added("model.mixer.n_ssm", None, S4_MIXER),
    Added("model.mixer.dt_lr", None, S4_MIXER),
    Added("model.mixer.tie_dropout", "${..tie_dropout}", S4_MIXER),
    Added("model.mixer.glu", True, S4_MIXER),
    Added("model.mixer.beta_range", [0, 1], DELTANET_MIXER),
)

RENAMED = (
    Renamed("model.mixer.state_size", "model.mixer.d_state"),
    Renamed("model.mixer.n_heads", "model.mixer.num_heads"),
    Renamed("model.mixer.lr_factor", "model.mixer.ssm_lr", convert=lr_from_factor),
    Renamed("model.mixer.solver", "model.mixer.jacobian",
            values={"quasi": "diag", "newton": "full", "sequential": "none"}),
)


_NO_VALUE = object()  # an override without a value (~key)


def _shown(value: Any) -> str:
    """A value as the configs write it (null, true)."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _warn(renamed: Renamed, old_value: Any, new_value: Any, where: str, note: str = "") -> None:
    """One line: where, old key (=value) -> new key (=value), and that the old name goes in the next release."""
    old, new = renamed.old, renamed.new
    if old_value is not _NO_VALUE:
        old, new = f"{old}={_shown(old_value)}", f"{new}={_shown(new_value)}"
    print(f"warning: {where}: {old} is deprecated, use {new}{note}; the old name {renamed.old.rsplit('.', 1)[-1]} "
          "will be removed in the next release", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------
# Stored configs


def _parent(cfg: DictConfig | dict, key: str) -> tuple[Any, str] | None:
    """The mapping that holds dotted `key` and its last part, or None when a level is missing."""
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node.get(part) if isinstance(node, (dict, DictConfig)) else None
        if node is None:
            return None
    return (node, last) if isinstance(node, (dict, DictConfig)) and last in node else None


def _raw(parent: DictConfig | dict, key: str) -> Any:
    """parent[key] as written: an interpolation stays its ${...} string."""
    if isinstance(parent, DictConfig):
        return OmegaConf.to_container(parent, resolve=False)[key]
    return parent[key]


def _set(cfg: DictConfig | dict, key: str, value: Any) -> None:
    if isinstance(cfg, DictConfig):
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        return
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def _delete(parent: DictConfig | dict, key: str) -> None:
    if isinstance(parent, DictConfig):
        with open_dict(parent):
            del parent[key]
    else:
        del parent[key]


def _add_missing(cfg: DictConfig | dict) -> None:
    """Write each ADDED key that a stored model config (a whole one: the backbone's _target_) lacks, with
    its old-behaviour value."""
    model = cfg.get("model")
    if not isinstance(model, (dict, DictConfig)) or model.get("_target_") != BACKBONE:
        return
    mixer = model.get("mixer")
    target = mixer.get("_target_") if isinstance(mixer, (dict, DictConfig)) else None
    for added in ADDED:
        *path, last = added.key.split(".")
        holder = _parent(cfg, ".".join(path)) if len(path) > 1 else (cfg, path[0])
        if holder is None or (added.mixer is not None and added.mixer != target):
            continue
        node = holder[0][holder[1]]
        if isinstance(node, (dict, DictConfig)) and last not in node:
            _set(cfg, added.key, added.value)


def migrate_config(cfg: DictConfig | dict, source: str = "stored config") -> DictConfig | dict:
    """Rename the RENAMED keys of a composed config in place (one warning line each), write in the
    ADDED keys it lacks, and return it. `source` names the config in the warnings (e.g. the file it was
    read from). Where the config sets the new key too, the new key's value is kept and the old key dropped."""
    for renamed in RENAMED:
        found = _parent(cfg, renamed.old)
        if found is None:
            continue
        parent, last = found
        old_value = _raw(parent, last)
        new_value = renamed.new_value(old_value)
        existing = _parent(cfg, renamed.new)
        if existing is None:
            _set(cfg, renamed.new, new_value)
            _warn(renamed, old_value, new_value, source)
        else:
            note = f" (it sets {renamed.new}={_shown(_raw(*existing))}, which is kept)"
            _warn(renamed, old_value, new_value, source, note)
        _delete(parent, last)
    _add_missing(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------------
# Command-line overrides

_OVERRIDE = re.compile(r"^(?P<prefix>\+\+|\+|~)?(?P<key>[^=]+?)(?:=(?P<value>.*))?$", re.DOTALL)
_SIMPLE_LIST = re.compile(r"^[^\[\](){}'\"$]*$")  # plain values and a plain sweep list a,b,c


def _override_value(renamed: Renamed, value: str) -> str:
    """The override's value for the new key: each element of a plain sweep list (a,b) converted; an
    interpolation written by `convert` quoted, as Hydra's override grammar needs for ${f:${x},y}."""
    if not _SIMPLE_LIST.match(value):
        if renamed.convert is None and not renamed.values:
            return value
        raise UserError(f"{renamed.old}={value}: {renamed.old} is renamed to {renamed.new} and this value cannot be "
                        f"converted automatically; write {renamed.new}=... (see `ssmbench.deprecations`)")
    converted = []
    for element in value.split(","):
        new = renamed.new_value(element)
        converted.append(f"'{new}'" if isinstance(new, str) and "${" in new else str(new))
    return ",".join(converted)


def migrate_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides with the RENAMED keys (and values) renamed, one warning line each:
    model.mixer.state_size=32 -> model.mixer.d_state=32; +key=v -> ++new=v (the new key is in the
    configs already, so adding it would fail); ~key -> ~new. Other overrides are returned unchanged."""
    by_old = {r.old: r for r in RENAMED}
    migrated = []
    for override in overrides:
        match = _OVERRIDE.match(override)
        renamed = by_old.get(match["key"]) if match else None
        if renamed is None:
            migrated.append(override)
            continue
        prefix, value = match["prefix"] or "", match["value"]
        prefix = "++" if prefix == "+" else prefix
        if value is None:
            migrated.append(f"{prefix}{renamed.new}")
            _warn(renamed, _NO_VALUE, _NO_VALUE, "command line")
            continue
        new_value = _override_value(renamed, value)
        migrated.append(f"{prefix}{renamed.new}={new_value}")
        _warn(renamed, value, new_value, "command line")
    return migrated
