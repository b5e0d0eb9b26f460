"""Users and their groups, stored in the knowledge base (a LanceDB table beside the chunks), with
passwords hashed by argon2 (argon2-cffi), never kept in clear.

A user reads the documents whose access names one of their groups, or `everyone`. An admin may also
ask as another user (`ask --as`) and set the access of uploads.
"""

from __future__ import annotations

import re
import time

import pyarrow as pa

from chatbot.errors import ChatbotError, ConfigError
from chatbot.store import ChunkStore, check_group, sql_str
from chatbot.types import Viewer

USERS_SCHEMA = pa.schema([
    pa.field("name", pa.string(), nullable=False),
    pa.field("password_hash", pa.string()),  # argon2id, with its own salt and parameters
    pa.field("groups", pa.string()),  # comma-separated
    pa.field("admin", pa.bool_()),
    pa.field("created_at", pa.float64()),
])
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10


# Addresses that are this machine: a sign-in header counts from here when no proxy address is named.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class AuthError(ChatbotError):
    """A sign-in that must be refused: unknown user or wrong password (never says which)."""


class UserStore:
    def __init__(self, store: ChunkStore):
        self.store = store
        self.table_name = f"{store.table_name}_users"
        self._hasher = None

    @property
    def hasher(self):
        if self._hasher is None:
            from argon2 import PasswordHasher

            self._hasher = PasswordHasher()
        return self._hasher

    def _table(self, create: bool = False):
        if not self.store.has_table(self.table_name):
            if not create:
                return None
            return self.store.db.create_table(self.table_name, schema=USERS_SCHEMA, exist_ok=True)
        return self.store.db.open_table(self.table_name)

    def _rows(self) -> list[dict]:
        table = self._table()
        return [] if table is None else table.to_arrow().to_pylist()

    def _row(self, name: str) -> dict | None:
        return next((r for r in self._rows() if r["name"] == name), None)

    def add(self, name: str, password: str, groups: list[str], admin: bool = False) -> None:
        if not _NAME.match(name or ""):
            raise ConfigError(f"user name {name!r}: letters, digits and . _ @ - (at most 64)")
        if self._row(name) is not None:
            raise ConfigError(f"user '{name}' exists already (change it with `users passwd` or remove it first)")
        row = {"name": name, "password_hash": self.hasher.hash(_checked(password)),
               "groups": ",".join(sorted({check_group(g) for g in groups})), "admin": bool(admin),
               "created_at": time.time()}
        self._table(create=True).add(pa.Table.from_pylist([row], schema=USERS_SCHEMA))

    def remove(self, name: str) -> None:
        if self._row(name) is None:
            raise ConfigError(f"no user '{name}'")
        self._table().delete(f"name = {sql_str(name)}")

    def set_password(self, name: str, password: str) -> None:
        if self._row(name) is None:
            raise ConfigError(f"no user '{name}'")
        self._table().update(where=f"name = {sql_str(name)}",
                             values={"password_hash": self.hasher.hash(_checked(password))})

    def list(self) -> list[Viewer]:
        return sorted((_viewer(r) for r in self._rows()), key=lambda v: v.name)

    def viewer(self, name: str) -> Viewer:
        row = self._row(name)
        if row is None:
            raise ConfigError(f"no user '{name}' (see `chatbot users list`)")
        return _viewer(row)

    def verify(self, name: str, password: str) -> Viewer:
        """The user, when the password is theirs; AuthError otherwise (the same for both failures)."""
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        row = self._row(name or "")
        try:
            if row is None:
                self.hasher.hash("x" * MIN_PASSWORD)  # the same work as a wrong password: no timing hint
                raise AuthError("unknown user or wrong password")
            self.hasher.verify(row["password_hash"], password or "")
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise AuthError("unknown user or wrong password") from None
        return _viewer(row)

    def any(self) -> bool:
        return bool(self._rows())


def _checked(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise ConfigError(f"the password must be at least {MIN_PASSWORD} characters")
    return password


def _viewer(row: dict) -> Viewer:
    return Viewer(row["name"], frozenset(g for g in (row["groups"] or "").split(",") if g), bool(row["admin"]))
