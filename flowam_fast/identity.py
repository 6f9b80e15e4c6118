"""What identifies a result: dataclasses whose fields say which settings change results, stored
as JSON and read back from the stored form of every earlier version, and compared by those
fields alone (`Identity.matches`), never as text. The AM run config (`am.config.AMConfig`), the
demo's stamp (`pipelines.demo.DemoConfig`) and the model description stored with flows and
explanations (`am.flows.ModelDescription`) are identities. Torch-free.

A field's place in the identity is its `setting`: whether it changes results (stored and
compared), the version of the stored form that added it, the value its absence implies in the
stores of earlier versions, and whether it is written only where it differs from that value
(so that what an earlier version could express keeps that version's stored form, and the
names that hash it).
"""
from __future__ import annotations

import json
from dataclasses import MISSING, field, fields
from typing import ClassVar


def setting(default=MISSING, *, identity: bool = True, since: int = 1, implied=None, sparse: bool = False,
            key: str | None = None):
    """A dataclass field of an `Identity`.

    Args:
        default: The field's default (none: the field is required).
        identity: The field changes results: stored and compared.
        since: The version of the stored form that added the field.
        implied: Its value in stored forms of versions before `since`, which lack it.
        sparse: Written only where it differs from `implied`.
        key: Its key in the stored form, where that is not the field's name (a Python keyword).
    """
    meta = {"identity": identity, "since": since, "implied": implied, "sparse": sparse, "key": key}
    return field(default=default, metadata=meta)


def _key(f) -> str:
    return f.metadata.get("key") or f.name


class Identity:
    """Mixin of a dataclass whose identity fields name a result (see the module docstring).

    Subclasses set `VERSION` (of the stored form) and `NAME` (for messages), and may override
    `migrate` to rename what an earlier version stored under another name.
    """

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str] = "identity"

    @classmethod
    def identity_fields(cls) -> tuple:
        """The names of the fields that change results, in order."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("identity", True))

    def identity(self) -> dict:
        """{field: value} of the identity fields."""
        return {name: getattr(self, name) for name in self.identity_fields()}

    def to_json(self) -> str:
        """The stored form: the identity fields as a JSON object with sorted keys, a sparse
        field left out at its implied value."""
        out = {}
        for f in fields(self):
            meta, value = f.metadata, getattr(self, f.name)
            if not meta.get("identity", True) or (meta.get("sparse") and value == meta["implied"]):
                continue
            out[_key(f)] = list(value) if isinstance(value, tuple) else value
        return json.dumps(out, sort_keys=True)

    @classmethod
    def migrate(cls, stored: dict, version: int) -> dict:
        """The stored fields of an earlier `version` under today's names (default: as they are)."""
        return stored

    @classmethod
    def from_json(cls, text: str):
        """Read one from its stored form, that of this version or of any earlier one.

        Args:
            text: A JSON object as `to_json` writes it (or wrote it in an earlier version); a
                "version" key, where present, names the version of the stored form.

        Returns:
            The identity, the fields an earlier version lacked at their implied values.

        Raises:
            ValueError: Not a JSON object, a field missing that every version stores, fields
                unknown to this version (a store of a newer flowam_fast), or an invalid value.
        """
        try:
            stored = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            stored = None
        if not isinstance(stored, dict):
            raise ValueError(f"not a stored {cls.NAME} (a JSON object): {str(text)[:80]!r}")
        version = stored.pop("version", cls.VERSION)
        if not isinstance(version, int) or version > cls.VERSION:
            raise ValueError(f"{cls.NAME} of version {version!r}; this flowam_fast reads versions up to {cls.VERSION}: "
                             "upgrade it")
        stored = cls.migrate(stored, version)
        names = {_key(f): f.name for f in fields(cls)}
        stored = {names.get(k, k): v for k, v in stored.items()}
        known = {f.name: f for f in fields(cls) if f.metadata.get("identity", True)}
        unknown = sorted(set(stored) - set(known))
        if unknown:
            raise ValueError(f"{cls.NAME} with fields unknown to this version ({', '.join(unknown)}): written by a "
                             "newer flowam_fast? upgrade it")
        # A field added after version 1 is missing from the stores of the versions before it,
        # and a sparse field from every store where it has its implied value.
        implied = {name: f.metadata["implied"] for name, f in known.items()
                   if f.metadata.get("since", 1) > 1 or f.metadata.get("sparse")}
        missing = [name for name in known if name not in stored and name not in implied]
        if missing:
            raise ValueError(f"stored {cls.NAME} lacks {', '.join(map(repr, missing))}: {str(text)[:80]!r}")
        values = {**implied, **stored}
        for name, f in known.items():  # JSON has lists where the fields hold tuples
            if isinstance(values.get(name), list) and isinstance(f.default, tuple):
                values[name] = tuple(values[name])
        return cls(**values)

    def matches(self, other) -> bool:
        """Whether `other` names the same result: equal identity fields, whatever the rest.

        Args:
            other: One of the same class, or its stored form (JSON, of any version); one that
                cannot be read matches nothing.
        """
        if isinstance(other, str):
            try:
                other = type(self).from_json(other)
            except (ValueError, TypeError):
                return False
        return isinstance(other, type(self)) and self.identity() == other.identity()

    def changes(self, other) -> list:
        """The identity fields whose values differ from `other`'s (of the same class), in order."""
        return [name for name in self.identity_fields() if getattr(self, name) != getattr(other, name)]
