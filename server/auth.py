"""Bearer tokens. Roles: ``agent`` (register, lease, post results), ``client`` (upload models, submit jobs,
train predictors), ``admin`` (everything; ``HIL_ADMIN_TOKEN`` from the environment, or DB tokens made with
``python -m server token create --role admin``). Reads (predictions, GETs) are open unless
``HIL_OPEN_READS=0``, in which case any valid token may read.

Tokens are 256-bit random strings shown once at creation and stored as their SHA-256: with that much entropy a
slow password hash adds nothing, and lookup stays an indexed equality.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Token

ROLES = ("agent", "client", "admin")
PREFIX = "hil_"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def may(self, role: str) -> bool:
        return self.role == "admin" or self.role == role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(s: Session, name: str, role: str) -> str:
    """Create a token and return its plain text (the only time it exists outside the caller)."""
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not allowed; allowed: {', '.join(ROLES)}")
    if s.scalar(select(Token).where(Token.name == name)) is not None:
        raise ValueError(f"name: a token named {name!r} exists already; revoke it or pick another name")
    plain = PREFIX + secrets.token_urlsafe(32)
    s.add(Token(name=name, role=role, hash=hash_token(plain), created_at=time.time()))
    s.commit()
    return plain


def revoke_token(s: Session, name: str) -> bool:
    tok = s.scalar(select(Token).where(Token.name == name, Token.revoked_at.is_(None)))
    if tok is None:
        return False
    tok.revoked_at = time.time()
    s.commit()
    return True


def authenticate(s: Session, token: str, admin_token: str | None) -> Principal | None:
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin", "admin")
    tok = s.scalar(select(Token).where(Token.hash == hash_token(token)))
    if tok is None or tok.revoked_at is not None:
        return None
    return Principal(tok.name, tok.role)
