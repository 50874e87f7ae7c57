"""Who may act: promotions, rollbacks, key management and erasure need the key of an operator
the store knows, whose role allows it; the audit records that operator, not whoever the
machine's user happens to be."""

from __future__ import annotations

from domain import PERMISSIONS, ROLES
from orchestrator.errors import AccessDenied, StepError
from orchestrator.settings import Settings
from serving.keys import hash_key, new_key
from store import Operator, Store

__all__ = ["OPERATOR_KEY_PREFIX", "authorize", "create_operator", "identify"]

OPERATOR_KEY_PREFIX = "slo_"
FIRST = "sentiloop operators create NAME --role admin"


def identify(settings: Settings, store: Store) -> Operator | None:
    """The operator whose key SENTILOOP_OPERATOR_KEY holds; None without a key. A key the
    store does not know (revoked, mistyped, another installation's) is refused outright."""
    if settings.operator_key is None:
        return None
    operator = store.operator_by_key(hash_key(settings.operator_key.get_secret_value().strip()))
    if operator is None:
        raise AccessDenied(
            "SENTILOOP_OPERATOR_KEY is not the key of an active operator here "
            "(revoked, mistyped or made for another store)"
        )
    return operator


def authorize(settings: Settings, store: Store, action: str) -> Operator:
    """The operator acting, if their role may do ``action`` (a key of PERMISSIONS)."""
    allowed = PERMISSIONS[action]
    operator = identify(settings, store)
    if operator is None:
        if not store.has_operators():
            raise AccessDenied(
                f"this needs an operator ({' or '.join(allowed)}) and none exists yet: "
                f"create the first admin with `{FIRST}`, then set SENTILOOP_OPERATOR_KEY"
            )
        raise AccessDenied(
            f"this needs an operator key ({' or '.join(allowed)}): set SENTILOOP_OPERATOR_KEY"
        )
    if operator.role not in allowed:
        raise AccessDenied(
            f"{operator.name} ({operator.role}) may not do this: it needs the role "
            + " or ".join(allowed)
        )
    return operator


def create_operator(settings: Settings, store: Store, name: str, role: str) -> tuple[str, Operator]:
    """A new operator and their key (shown once). The first operator of a store is its admin
    and needs no key; every later one is created by an admin."""
    if role not in ROLES:
        raise StepError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if not name.strip() or len(name) > 64 or not name.isprintable():
        raise StepError("an operator's name is 1 to 64 printable characters")
    key, key_hash, prefix = new_key(OPERATOR_KEY_PREFIX)
    if not store.has_operators():
        if role != "admin":
            raise AccessDenied(f"the first operator is the admin: `{FIRST}`")
        return key, store.add_operator(name, role, key_hash, prefix, by=None)
    admin = authorize(settings, store, "operators")
    return key, store.add_operator(name, role, key_hash, prefix, by=admin.name)
