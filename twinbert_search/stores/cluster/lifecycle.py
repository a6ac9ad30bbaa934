"""Where writes go, and blue/green rebuilds behind an alias, for any cluster engine.

With an alias, documents go to a concrete index `<alias>-<generation>` (six digits), built
with refresh off (replicas on: a node lost mid-build loses no acknowledged write);
`finalize()` restores its live settings, refreshes it and moves the alias in one `_aliases`
call, so readers switch from the old generation to the new one at once. A build that failed
part way is still in build settings (refresh_interval -1): the next run takes it up again
instead of starting over, so it only sends what is missing.
Without an alias, writes go to the named index itself.

The logic is written over `IndexAdmin`, a small protocol of index and alias calls, so an
engine only adapts its client's calls to it (`stores/opensearch/lifecycle.py`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from twinbert_search.errors import ConfigurationError, StoreError

logger = logging.getLogger(__name__)

DEFAULT_BASE = "twinbert"
_GENERATION = re.compile(r"^(?P<base>.+)-(?P<gen>\d{6})$")


def check_name(name: str | None) -> None:
    """Index and alias names: lowercase, not starting with _ or - (both engines' rule)."""
    if name is not None and (name != name.lower() or not name or name.startswith(("_", "-"))):
        raise ConfigurationError(
            f"invalid index or alias name {name!r}: lowercase, not starting with _ or -"
        )


def generation_of(name: str, base: str | None = None) -> int | None:
    """The generation number of `<base>-NNNNNN` (of any base when `base` is None)."""
    match = _GENERATION.match(name)
    if match is None or (base is not None and match["base"] != base):
        return None
    return int(match["gen"])


def generation_name(base: str, generation: int) -> str:
    """`<base>-NNNNNN`: zero-padded, so generations sort by name as by number."""
    return f"{base}-{generation:06d}"


def template_priority(base: str) -> int:
    """The index template's priority for `base`: 200 plus the length of the name.

    Both engines refuse a template whose patterns overlap another's at the same priority,
    and `<base>-*` overlaps the patterns of every base that extends it (`news-*` and
    `news-2024-*`). A longer base is the more specific, so it wins; two bases of one length
    never overlap, so two of our templates never tie.
    """
    return 200 + len(base)


class IndexAdmin(Protocol):
    """The index and alias calls the lifecycle needs, each a single request.

    `errors(what)` turns the engine's exceptions into the package's errors, naming `what`
    was being done; the other calls raise the engine's own exceptions.
    """

    def errors(self, what: str) -> AbstractContextManager[Any]: ...
    def alias_exists(self, name: str) -> bool: ...
    def alias_members(self, name: str) -> list[str]: ...
    def index_exists(self, name: str) -> bool: ...
    def matching(self, pattern: str) -> list[str]: ...
    def flat_settings(self, index: str) -> Mapping[str, Any]: ...
    def put_settings(self, index: str, body: Mapping[str, Any]) -> None: ...
    def refresh(self, index: str) -> None: ...
    def update_aliases(self, actions: list[dict[str, Any]]) -> None: ...
    def delete(self, indices: Sequence[str]) -> None: ...


class ClientAdmin:
    """The part of an engine's `IndexAdmin` adapter both clients spell alike: the client, the
    store's error translation (`errors`), existence checks, refresh and delete by name."""

    def __init__(self, client: Any, errors: Callable[[str], AbstractContextManager[Any]]) -> None:
        self.client = client
        self._errors = errors

    def errors(self, what: str) -> AbstractContextManager[Any]:
        return self._errors(what)

    def alias_exists(self, name: str) -> bool:
        return bool(self.client.indices.exists_alias(name=name))

    def index_exists(self, name: str) -> bool:
        return bool(self.client.indices.exists(index=name))

    def refresh(self, index: str) -> None:
        self.client.indices.refresh(index=index)

    def delete(self, indices: Sequence[str]) -> None:
        self.client.indices.delete(index=",".join(indices))


@dataclass
class Rebuild:
    """A blue/green rebuild in progress: what the alias pointed to when it began."""

    old_indices: list[str]
    delete_old: bool
    alias_is_index: bool


def alias_actions(alias: str, new_index: str, rebuild: Rebuild) -> list[dict[str, Any]]:
    """One `_aliases` body: add the new index, and remove the old ones (or the index that
    had the alias's name) in the same atomic call."""
    old = [i for i in rebuild.old_indices if i != new_index]
    actions: list[dict[str, Any]] = [{"add": {"index": new_index, "alias": alias}}]
    if rebuild.alias_is_index:
        actions.append({"remove_index": {"index": alias}})
    else:
        actions += [{"remove": {"index": name, "alias": alias}} for name in old]
    return actions


class Generations:
    """The write target of one store: an index, or generations behind an alias.

    `write_index` is where writes go (None until known or created); `created` is an index
    this store created or took up, which `finalize()` makes live; `rebuild` is set between
    `begin_rebuild()` and the alias switch.
    """

    def __init__(self, admin: IndexAdmin, *, index: str | None, alias: str | None) -> None:
        self.admin = admin
        self.index = index
        self.alias = alias
        self.write_index: str | None = None
        self.created: str | None = None
        self.rebuild: Rebuild | None = None

    def concrete_indices(self, name: str) -> list[str]:
        """The indices `name` refers to ([] if nothing): itself, or an alias's members."""
        with self.admin.errors(f"resolve {name}"):
            if self.admin.alias_exists(name):
                return sorted(self.admin.alias_members(name))
            if self.admin.index_exists(name):
                return [name]
        return []

    def _generations(self, base: str) -> list[str]:
        with self.admin.errors(f"list the indices of {base}"):
            return self.admin.matching(f"{base}-*")

    def new_index_name(self) -> str:
        """The index to create: the named one, or the alias's next generation."""
        if self.index:
            return self.index
        base = self.alias or ""
        gens = [g for n in self._generations(base) if (g := generation_of(n, base)) is not None]
        return generation_name(base, max(gens, default=0) + 1)

    def mark_created(self, name: str) -> None:
        """Record an index the caller just created: writes go there, finalize() makes it live."""
        self.created = name
        self.write_index = name

    def resolve_write_index(self) -> str | None:
        """The concrete index writes go to, or None when it has yet to be created.

        An index left in its build settings by an interrupted run is taken up again (and made
        live by the next `finalize()`), so a rerun only sends what it lacks.
        """
        if self.write_index is not None:
            return self.write_index
        if self.alias:
            members = self.concrete_indices(self.alias)
            if len(members) > 1:
                raise StoreError(
                    f"alias {self.alias} points to {len(members)} indices ({', '.join(members)}); "
                    "writes need exactly one"
                )
            if members:
                self.write_index = members[0]
            else:
                self.write_index = self.created = self.unfinished_build(after=[])
        elif self.index and self.concrete_indices(self.index):
            self.write_index = self.index
            if self.is_building(self.index):
                self.created = self.index
        return self.write_index

    def is_building(self, index: str) -> bool:
        """Still in build settings (refresh off), i.e. never made live by finalize()."""
        with self.admin.errors(f"read the settings of {index}"):
            flat = self.admin.flat_settings(index)
        return str(flat.get("index.refresh_interval")) == "-1"

    def unfinished_build(self, after: Sequence[str]) -> str | None:
        """A generation newer than `after`, still in build settings (an interrupted build)."""
        if self.index:
            candidates = [self.index] if self.concrete_indices(self.index) else []
        else:
            base = self.alias or ""
            found = self._generations(base)
            live = [g for n in after if (g := generation_of(n)) is not None]
            newest_live = max(live, default=0)
            candidates = sorted(
                name
                for name in found
                if (g := generation_of(name, base)) is not None and g > newest_live
            )
        candidates = [c for c in candidates if c not in after]
        if candidates and self.is_building(candidates[-1]):
            logger.info("taking up the unfinished build in %s", candidates[-1])
            return candidates[-1]
        return None

    def begin_rebuild(self, *, resume: bool, delete_old: bool) -> str | None:
        """Send the following writes to a new generation; returns it when one is taken up.

        With `resume`, an unaliased generation left by a failed rebuild is reused. Otherwise
        the caller creates the new generation (at once, or with the first write).
        """
        if not self.alias:
            raise ConfigurationError("a blue/green rebuild needs an alias (--alias)")
        with self.admin.errors(f"inspect {self.alias}"):
            alias_is_index = not self.admin.alias_exists(self.alias) and self.admin.index_exists(
                self.alias
            )
        old = [self.alias] if alias_is_index else self.concrete_indices(self.alias)
        if alias_is_index and not delete_old:
            raise StoreError(
                f"{self.alias} is a concrete index; turning it into an alias replaces it: "
                "rebuild with delete_old (--delete-old)"
            )
        self.rebuild = Rebuild(
            old_indices=old, delete_old=delete_old, alias_is_index=alias_is_index
        )
        self.write_index = None
        self.created = None
        if resume:
            self.write_index = self.created = self.unfinished_build(after=old)
        return self.write_index

    def hash_target(self) -> str | None:
        """Where recorded content hashes are read: the new generation during a rebuild."""
        return self.write_index if self.rebuild else self.resolve_write_index()

    def finalize(self, live_settings: Mapping[str, Any], *, partial: bool = False) -> bool:
        """Refresh; a newly built index gets its live settings and then the alias.

        `partial`: the run stopped before the end. A rebuild then only refreshes its new
        generation and leaves the alias on the complete old index (a later run resumes the
        build); a first build goes live anyway, so what was written is searchable. Returns True
        when an index went live (readers should look up the target again).
        """
        if partial and self.created is not None and self.rebuild is not None:
            with self.admin.errors(f"refresh {self.created}"):
                self.admin.refresh(self.created)
            return False
        if self.created is not None:
            created = self.created
            with self.admin.errors(f"make {created} live"):
                self.admin.put_settings(created, live_settings)
                self.admin.refresh(created)
            if self.alias:
                self.switch_alias(created)
            self.created = None
            return True
        if self.write_index is not None:
            with self.admin.errors(f"refresh {self.write_index}"):
                self.admin.refresh(self.write_index)
        return False

    def switch_alias(self, new_index: str) -> None:
        """Point the alias at `new_index` in one call; drop the old indices if asked."""
        alias = self.alias or ""
        rebuild = self.rebuild or Rebuild(
            old_indices=[i for i in self.concrete_indices(alias) if i != new_index],
            delete_old=False,
            alias_is_index=False,
        )
        old = [i for i in rebuild.old_indices if i != new_index]
        with self.admin.errors(f"move the alias {alias} to {new_index}"):
            self.admin.update_aliases(alias_actions(alias, new_index, rebuild))
        logger.info("alias %s now points to %s", alias, new_index)
        if rebuild.delete_old and not rebuild.alias_is_index and old:
            with self.admin.errors(f"delete {', '.join(old)}"):
                self.admin.delete(old)
        self.rebuild = None
        self.write_index = new_index
