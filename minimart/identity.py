"""Sender identity on every delivery: Knative Eventing's OIDC tokens, minted and verified.

With the ``authentication-oidc`` feature, Knative gives each KafkaSource a ServiceAccount of
its own (``source_subject``) and sends, on every delivery, ``Authorization: Bearer <JWT>``:
a token of that ServiceAccount for the sink's audience (the KafkaSource's
``spec.sink.audience``: a Knative Service publishes none, so the manifests set
``audience_of(service)``). Every function that a KafkaSource feeds checks the token here
(``Verifier``): its signature against the issuer's keys, the issuer, the audience (the function
itself), the expiry, and the subject (a source the manifests declare for that function, or
an operator identity such as the console's). Missing or invalid: 401; valid but not for this
function or not from an allowed sender: 403. The dispatcher dead-letters both at once.

The local runtime does the same with a local issuer (``LocalIssuer``: an RSA key pair in the
state dir) and a ``TokenMinter`` per dispatcher, so this code runs on every local order.

Per event, the cost is one dict lookup on either side: the minter hands out its cached header
until shortly before the token expires; the verifier caches each verified ``Authorization``
value until its token's expiry. Only a new token costs an RSA operation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

NAMESPACE = "minimart"
ALGORITHM = "RS256"
BEARER = "Bearer "
# A Kubernetes ServiceAccount token's subject.
SUBJECT_PREFIX = "system:serviceaccount:"
# Knative names a source's OIDC ServiceAccount <name>-oidc-<group>-<kind>, lower-cased
# (knative/eventing pkg/auth/serviceaccount.go, GetOIDCServiceAccountNameForResource, the
# same from knative-v1.16.7 to main in 2026; the KafkaSource reconciler of
# eventing-kafka-broker knative-v1.23.0 calls it with sources.knative.dev/KafkaSource).
KAFKA_SOURCE_SA_SUFFIX = "-oidc-sources.knative.dev-kafkasource"
# Longer names are hashed by Knative (kmeta.ChildName); ours stay below, checked here.
MAX_NAME = 63
# The ServiceAccount the ops console acts under when it POSTs to a function (replay --http).
CONSOLE_ACCOUNT = "minimart-console"
# Tokens a dispatcher mints: short-lived, replaced this long before they expire.
TOKEN_LIFETIME_S = 600
REFRESH_BEFORE_S = 120
# Clock skew allowed on exp/iat/nbf.
LEEWAY_S = 5
# Verified tokens kept: far more than the senders of one function (one token each at a time).
MAX_CACHED = 4096
# A key id the issuer does not know is looked up again at most this often (key rotation).
KEYS_REFRESH_MIN_S = 30.0


def audience_of(service: str, namespace: str = NAMESPACE) -> str:
    """The audience a function verifies, and its KafkaSources' ``spec.sink.audience``: shaped
    as Knative names its own resources' audiences (group/kind/namespace/name)."""
    return f"serving.knative.dev/service/{namespace}/{service}"


def account_subject(account: str, namespace: str = NAMESPACE) -> str:
    """The ``sub`` of a ServiceAccount's token."""
    return f"{SUBJECT_PREFIX}{namespace}:{account}"


def source_account(source: str) -> str:
    """The OIDC ServiceAccount Knative creates for KafkaSource ``source``."""
    name = (source + KAFKA_SOURCE_SA_SUFFIX).lower()
    if len(name) > MAX_NAME:
        raise ValueError(f"KafkaSource name {source!r}: its ServiceAccount name would be hashed")
    return name


def source_subject(source: str, namespace: str = NAMESPACE) -> str:
    """The ``sub`` of the tokens KafkaSource ``source`` sends."""
    return account_subject(source_account(source), namespace)


CONSOLE_SUBJECT = account_subject(CONSOLE_ACCOUNT)


def parse_subjects(text: str) -> frozenset[str]:
    """``MINIMART_OIDC_SUBJECTS``: comma-separated subjects."""
    return frozenset(filter(None, (part.strip() for part in text.split(","))))


# -- verification ----------------------------------------------------------------------------


class Refused(Exception):
    """A delivery whose sender is not proven (401) or not allowed here (403)."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail


def _unauthenticated(detail: str) -> Refused:
    return Refused(401, "unauthenticated", detail)


def _forbidden(detail: str) -> Refused:
    return Refused(403, "forbidden", detail)


class Keys(Protocol):
    def warm_up(self) -> None:
        """Read the keys now (readiness)."""

    def key(self, kid: str | None) -> Any:
        """The issuer's public key of id ``kid``; KeyError when it has none."""


class JwksKeys:
    """The issuer's keys from its JWKS document (``fetch`` reads it), cached; an unknown key
    id is looked up again (a rotation), at most every ``KEYS_REFRESH_MIN_S``."""

    def __init__(
        self, fetch: Callable[[], Mapping[str, Any]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        document = self._fetch()
        keys: dict[str | None, Any] = {}
        for jwk in document.get("keys", ()):
            if jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
                continue
            key = jwt.PyJWK(jwk, ALGORITHM).key
            keys[jwk.get("kid")] = key
        if len(keys) == 1:
            keys.setdefault(None, next(iter(keys.values())))  # a token without kid
        self._keys = keys

    def warm_up(self) -> None:
        """Read the keys now unless they were (readiness: before the first delivery)."""
        if self._fetched_at is None:
            with self._lock:
                if self._fetched_at is None:
                    self._load()
                    self._fetched_at = self._clock()

    def key(self, kid: str | None) -> Any:
        found = self._keys.get(kid)
        if found is not None:
            return found
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= KEYS_REFRESH_MIN_S:
                self._fetched_at = now
                self._load()
        return self._keys[kid]


@dataclass(frozen=True)
class Policy:
    """Who may deliver to which function: the issuer, and the subjects allowed per service
    (a function process knows its own; a test process all)."""

    issuer: str
    subjects: Mapping[str, frozenset[str]]


class Verifier:
    """Checks the ``Authorization`` of a delivery to ``service`` (``verify``)."""

    def __init__(
        self,
        keys: Keys,
        policy: Policy,
        clock: Callable[[], float] = time.time,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._keys = keys
        self._policy = policy
        self._clock = clock
        self._max_cached = max_cached
        # Authorization header value -> (expiry, service it was verified for).
        self._verified: dict[str, tuple[float, str]] = {}

    def warm_up(self) -> None:
        self._keys.warm_up()

    def verify(self, service: str, authorization: str | None) -> None:
        """Return if ``authorization`` proves an allowed sender to ``service``; else raise
        ``Refused``. A header verified before (and not expired) costs one dict lookup."""
        if authorization is not None:
            hit = self._verified.get(authorization)
            if hit is not None and hit[1] == service and self._clock() < hit[0]:
                return
        expiry = self._check(service, authorization)
        verified = self._verified
        if len(verified) >= self._max_cached:  # expired ones out (list(): one atomic copy)
            now = self._clock()
            for header, (until, _) in list(verified.items()):
                if until <= now:
                    verified.pop(header, None)
            if len(verified) >= self._max_cached:
                verified.clear()
        verified[authorization] = (expiry, service)  # type: ignore[index]

    def _check(self, service: str, authorization: str | None) -> float:
        if not authorization:
            raise _unauthenticated("no Authorization header: a bearer token is required")
        if not authorization.startswith(BEARER):
            raise _unauthenticated("the Authorization header is not a bearer token")
        token = authorization[len(BEARER) :].strip()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.key(kid)
        except jwt.InvalidTokenError as exc:
            raise _unauthenticated(f"malformed token: {exc}") from None
        except KeyError:
            raise _unauthenticated("token signed by a key the issuer does not have") from None
        audience = audience_of(service)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self._policy.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidAudienceError:
            raise _forbidden(f"token not meant for {audience}") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthenticated(f"invalid token: {exc}") from None
        expiry = float(claims["exp"]) + LEEWAY_S
        if self._clock() >= expiry:  # this verifier's clock (the cache's) has the last word
            raise _unauthenticated("token expired")
        subject = claims["sub"]
        if subject not in self._policy.subjects.get(service, ()):
            raise _forbidden(f"{subject} may not deliver to {service}")
        return expiry


def www_authenticate(refused: Refused) -> str:
    """The ``WWW-Authenticate`` value of a refusal (RFC 6750)."""
    error = "invalid_token" if refused.status == 401 else "insufficient_scope"
    return f'Bearer error="{error}"'


# -- minting (the local issuer and what sends with its tokens) ---------------------------------


class LocalIssuer:
    """The local runtime's token issuer: an RSA key pair kept in ``folder`` (the state dir),
    standing in for the cluster's ServiceAccount issuer. ``create`` makes it once."""

    KEY_FILE = "issuer-key.pem"
    JWKS_FILE = "jwks.json"

    def __init__(self, folder: Path, issuer: str) -> None:
        self.folder = folder
        self.issuer = issuer

    @property
    def key_path(self) -> Path:
        return self.folder / self.KEY_FILE

    @property
    def jwks_path(self) -> Path:
        return self.folder / self.JWKS_FILE

    def create(self) -> bool:
        """Make the key pair unless it exists; whether it was made."""
        if self.key_path.exists() and self.jwks_path.exists():
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        partial = self.key_path.with_suffix(".tmp")
        partial.touch(mode=0o600)
        partial.write_bytes(pem)
        partial.replace(self.key_path)
        self.jwks_path.write_text(json.dumps(jwks_of([key.public_key()])))
        return True

    def signing_key(self) -> SigningKey:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return SigningKey(key, self.issuer)


def _thumb(public: rsa.RSAPublicKey) -> str:
    """A key's ``kid``: its RFC 7638 thumbprint."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def jwks_of(keys: Iterable[rsa.RSAPublicKey]) -> dict[str, Any]:
    """A JWKS document of ``keys``."""
    out = []
    for public in keys:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        jwk.update({"kid": _thumb(public), "use": "sig", "alg": ALGORITHM})
        out.append(jwk)
    return {"keys": out}


@dataclass(frozen=True)
class SigningKey:
    """A private key of an issuer."""

    key: rsa.RSAPrivateKey
    issuer: str

    @property
    def kid(self) -> str:
        return _thumb(self.key.public_key())

    def mint(self, subject: str, audience: str, lifetime_s: float, now: float, **extra: Any) -> str:
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime_s),
            **extra,
        }
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid})


class TokenMinter:
    """The ``Authorization`` value a sender puts on every delivery: a token of ``subject`` for
    ``audience``, minted once and handed out until ``REFRESH_BEFORE_S`` before it expires (as
    Knative's dispatcher caches its TokenRequest tokens). Thread-safe."""

    def __init__(
        self,
        key: SigningKey,
        subject: str,
        audience: str,
        lifetime_s: float = TOKEN_LIFETIME_S,
        refresh_before_s: float = REFRESH_BEFORE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self.subject = subject
        self.audience = audience
        self._lifetime_s = lifetime_s
        self._refresh_before_s = min(refresh_before_s, lifetime_s / 2)
        self._clock = clock
        self._header = ""
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        if self._clock() < self._renew_at:
            return self._header
        with self._lock:
            now = self._clock()
            if now >= self._renew_at:
                token = self._key.mint(self.subject, self.audience, self._lifetime_s, now)
                self._header = BEARER + token
                self._renew_at = now + self._lifetime_s - self._refresh_before_s
            return self._header


# -- the keys' location: a file (the local issuer) or the cluster's JWKS endpoint ---------------


def jwks_fetcher(
    location: str, token_file: str = "", ca_file: str = "", timeout_s: float = 5.0
) -> Callable[[], Mapping[str, Any]]:
    """Reads the JWKS at ``location``: an ``https://``/``http://`` URL (in a cluster the API
    server's ``/openid/v1/jwks``, asked with the pod's projected token ``token_file`` and the
    cluster's CA ``ca_file``), else a file path."""
    if not location.startswith(("https://", "http://")):
        path = Path(location)

        def read_file() -> Mapping[str, Any]:
            document: Mapping[str, Any] = json.loads(path.read_text())
            return document

        return read_file

    def read_url() -> Mapping[str, Any]:
        headers = {}
        if token_file:
            headers["Authorization"] = BEARER + Path(token_file).read_text().strip()
        response = requests.get(
            location, headers=headers, timeout=timeout_s, verify=ca_file or True
        )
        response.raise_for_status()
        document: Mapping[str, Any] = response.json()
        return document

    return read_url
