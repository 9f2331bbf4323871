"""Sender tokens for in-process tests: a test issuer (an RSA key pair made once per process),
tokens of the senders the manifests declare, and the verifier a container of fakes uses.

``bearer("payment")`` is what payment-source would send to the payment function;
``verifier()`` checks tokens as every function does, with the senders each is allowed
(``stack.allowed_senders`` of the manifests, as the local runner and k8s/functions/ give).
"""

from __future__ import annotations

import time
from functools import cache

from cryptography.hazmat.primitives.asymmetric import rsa

from minimart import identity
from minimart.local.stack import allowed_senders
from minimart.manifests import load_topology
from minimart.settings import PROJECT_ROOT

ISSUER = "https://issuer.test.minimart"


@cache
def signing_key() -> identity.SigningKey:
    """The test issuer's key."""
    return identity.SigningKey(rsa.generate_private_key(65537, 2048), ISSUER)


@cache
def stranger_key() -> identity.SigningKey:
    """A key the issuer does not have, naming the issuer all the same."""
    return identity.SigningKey(rsa.generate_private_key(65537, 2048), ISSUER)


@cache
def senders() -> dict[str, tuple[str, ...]]:
    """Who may deliver to each function, from the manifests."""
    return allowed_senders(load_topology(PROJECT_ROOT))


def source_of(service: str) -> str:
    """The subject of a KafkaSource the manifests declare for ``service``."""
    return senders()[service][0]


def bearer(
    service: str,
    *,
    subject: str | None = None,
    audience: str | None = None,
    lifetime_s: float = 300,
    issued_at: float | None = None,
    key: identity.SigningKey | None = None,
) -> str:
    """An Authorization value: by default what ``service``'s KafkaSource sends it."""
    token = (key or signing_key()).mint(
        subject or source_of(service),
        audience or identity.audience_of(service),
        lifetime_s,
        time.time() if issued_at is None else issued_at,
    )
    return identity.BEARER + token


def verifier() -> identity.Verifier:
    """The verifier of every function, with the test issuer's keys (as a JWKS document)."""
    public = signing_key().key.public_key()
    keys = identity.JwksKeys(lambda: identity.jwks_of([public]))
    subjects = {service: frozenset(allowed) for service, allowed in senders().items()}
    return identity.Verifier(keys, identity.Policy(ISSUER, subjects))
