"""Every ``PIXELFOX_`` environment variable PixelFox reads, and a warning for the ones it does not.

A misspelled setting (``PIXELFOX_ALOW_ANONYMOUS=false``) used to be ignored without a word: the
settings classes ignore variables they do not know, since every node gets the same environment.
``pixelfox up`` and each node's ``--print-config`` say on stderr which ones no node knows, with the
closest known name (:func:`unknown_settings`), and every node logs them as warnings when it starts
(:func:`pixelfox.config.log_unknown_settings`), for nodes started by hand on other hosts.

The known names are the fields of every node's settings class (nested models joined with ``__``,
as ``PIXELFOX_CLUSTER__SECRET``), plus :data:`OTHER_NAMES`, read outside those classes.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from pixelfox.failpoints import ENV as FAILPOINT_ENV

PREFIX = "PIXELFOX_"

#: variables read outside the nodes' settings classes: by the CLI, by scripts, tests and benchmarks,
#: and by deploy/compose.yaml (which hands them on under the nodes' own names)
OTHER_NAMES = frozenset({
    "PIXELFOX_MANAGER", "PIXELFOX_API_KEY", "PIXELFOX_DEBUG",  # the pixelfox command (docs/operations.md)
    "PIXELFOX_SETTINGS_CHECKED",  # set by pixelfox up for its nodes (pixelfox.config.SETTINGS_CHECKED)
    FAILPOINT_ENV,  # a test hook every node reads itself (pixelfox/failpoints.py)
    "PIXELFOX_INSTALL_TICK_S", "PIXELFOX_EXTRA_DEBS", "PIXELFOX_FUZZ_SECONDS",  # scripts/install, scripts/test
    "PIXELFOX_SHARED", "PIXELFOX_CHAOS", "PIXELFOX_CHAOS_FSYNC", "PIXELFOX_CHAOS_N", "PIXELFOX_SCREENSHOTS",
    "PIXELFOX_SCHEMATHESIS_EXAMPLES",  # tests/
    "PIXELFOX_CLUSTER_SECRET", "PIXELFOX_DB_PASSWORD", "PIXELFOX_S3_KEY", "PIXELFOX_S3_SECRET",  # compose.yaml
})
#: beginnings of known families of names (bench/: PIXELFOX_BENCH_USERS, ..._SLUGS, ...)
OTHER_PREFIXES = ("PIXELFOX_BENCH_",)
#: how alike (difflib's ratio, 0-1) a known name must be to be offered as the one meant
CLOSE = 0.7


def _settings_classes() -> list[type[BaseModel]]:
    """The settings class of every kind of node (imported here: only ``up`` and ``--print-config`` need them)."""
    from nodes.manager.config import ManagerSettings
    from nodes.proc.config import ProcSettings
    from nodes.storage.config import StorageNodeSettings
    from nodes.upload.config import UploadSettings
    from web.config import WebSettings

    return [ManagerSettings, ProcSettings, StorageNodeSettings, UploadSettings, WebSettings]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``RedisSettings``), or None for a plain value."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _names(model: type[BaseModel], prefix: str, names: set[str], open_prefixes: set[str]) -> None:
    """Add the variables of ``model``'s fields under ``prefix`` to ``names``; a dict field
    (``PIXELFOX_TIERS__RULES``) takes any key below it, so its name plus ``__`` goes to ``open_prefixes``."""
    for field_name, info in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        names.add(name)
        if (sub := _model_of(info.annotation)) is not None:
            _names(sub, name + "__", names, open_prefixes)
        elif getattr(info.annotation, "__origin__", None) is dict:
            open_prefixes.add(name + "__")


def known_settings(classes: list[type[BaseModel]] | None = None) -> tuple[frozenset[str], tuple[str, ...]]:
    """Every known variable name (upper case), and the prefixes below which any name is known; with
    ``classes``, only the names of those settings classes (plus :data:`OTHER_NAMES`)."""
    names, open_prefixes = set(OTHER_NAMES), set(OTHER_PREFIXES)
    for cls in _settings_classes() if classes is None else classes:
        _names(cls, PREFIX, names, open_prefixes)
    return frozenset(names), tuple(sorted(open_prefixes))


def is_known(name: str, known: tuple[frozenset[str], tuple[str, ...]]) -> bool:
    """Whether ``name`` (any case, as pydantic-settings matches) is a variable PixelFox reads."""
    names, open_prefixes = known
    upper = name.upper()
    return upper in names or upper.startswith(open_prefixes)


def unknown_settings(env: Mapping[str, str], own: type[BaseModel] | None = None) -> list[str]:
    """One ``warning:`` line per ``PIXELFOX_`` variable of ``env`` that no node reads, in name order:
    ``warning: PIXELFOX_ALOW_ANONYMOUS is not a PixelFox setting (did you mean PIXELFOX_ALLOW_ANONYMOUS?)``,
    without the question when no known name is close (difflib on the part after ``PIXELFOX_``, cutoff
    :data:`CLOSE`). ``own``, the caller's settings class, is a shortcut: when it knows every variable, the
    other nodes' classes are not imported (about 1.4 s of SQLAlchemy and boto3 at a node's start)."""
    if own is not None:
        mine = known_settings([own])
        if all(is_known(n, mine) for n in env if n.upper().startswith(PREFIX)):
            return []
    known = known_settings()
    tails = {name.removeprefix(PREFIX): name for name in known[0]}
    lines = []
    for name in sorted(n for n in env if n.upper().startswith(PREFIX) and not is_known(n, known)):
        close = difflib.get_close_matches(name.upper().removeprefix(PREFIX), tails, n=1, cutoff=CLOSE)
        guess = f" (did you mean {tails[close[0]]}?)" if close else ""
        lines.append(f"warning: {name} is not a PixelFox setting{guess}")
    return lines


def warn_unknown_settings(env: Mapping[str, str]) -> None:
    """Print :func:`unknown_settings` of ``env`` on stderr."""
    for line in unknown_settings(env):
        print(line, file=sys.stderr, flush=True)
