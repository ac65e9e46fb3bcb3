"""Token management shared by `sandbox token` and the admin API."""
from __future__ import annotations

import os

from sandbox.errors import InputError
from sandbox.service import auth
from sandbox.service.config import default_state, prepare_state
from sandbox.service.models import TokenCreate, TokenCreated, TokenView
from sandbox.service.store import Store, TokenRow


def open_store(state: str | None) -> Store:
    return Store(os.path.join(prepare_state(state or default_state()), "service.db"))


def row_view(t: TokenRow) -> TokenView:
    return TokenView(id=t.id, name=t.name, ceiling=t.ceiling, max_concurrent=t.max_concurrent,
                     max_queued=t.max_queued, rate=t.rate, admin=t.admin,
                     created_at=t.created_at, revoked_at=t.revoked_at, queues=t.queues)


def create(store: Store, spec: TokenCreate) -> TokenCreated:
    """A new token; InputError when its ceiling is not a loadable policy name."""
    if spec.ceiling is not None:
        from sandbox.policy.search import is_name
        from sandbox.policy.loader import load_policy
        if not is_name(spec.ceiling):
            raise InputError(f"ceiling {spec.ceiling!r}: give a built-in or registered "
                             "policy name")
        load_policy(spec.ceiling)   # PolicyError (an InputError) when it does not load
    secret, row = auth.new_token(store, name=spec.name, ceiling=spec.ceiling,
                                 max_concurrent=spec.max_concurrent,
                                 max_queued=spec.max_queued, rate=spec.rate, admin=spec.admin,
                                 queues=spec.queues)
    return TokenCreated(**row_view(row).model_dump(), token=secret)
