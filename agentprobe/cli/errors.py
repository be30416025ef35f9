"""Exceptions that mean "the user gave us something we cannot use": one line, exit 2."""

from __future__ import annotations

from ..proxy.runner import ProxyStartError
from ..store.db import StoreError


class UserError(Exception):
    pass


USER_ERRORS = (UserError, StoreError, ProxyStartError)
