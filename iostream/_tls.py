"""TLS context policy: how ``ssl_options`` become an :class:`ssl.SSLContext`.

One place decides what a stream or server built from a dict trusts: a
client verifies the certificate and the host name unless ``cert_reqs``
says otherwise; TLS 1.2 is the floor; Tornado's ``ssl_version`` key is
understood (see :func:`make_ssl_context`).
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["make_ssl_context"]


_SSL_OPTION_KEYS = frozenset(
    {"certfile", "keyfile", "cert_reqs", "ca_certs", "ciphers", "ssl_version"}
)

#: Tornado's ``ssl_version`` values that pin one protocol version.
_PINNED_VERSIONS = {
    name: version
    for name, version in (
        ("PROTOCOL_TLSv1_2", ssl.TLSVersion.TLSv1_2),
        ("PROTOCOL_TLSv1_1", ssl.TLSVersion.TLSv1_1),
        ("PROTOCOL_TLSv1", ssl.TLSVersion.TLSv1),
    )
    if hasattr(ssl, name)
}


def _context_for_version(ssl_version: object, server_side: bool) -> tuple[ssl.SSLContext, bool]:
    """A context for Tornado's ``ssl_version`` key: ``(context, pinned)``.

    ``PROTOCOL_TLS`` / ``PROTOCOL_SSLv23`` (negotiate) and the side's own
    ``PROTOCOL_TLS_SERVER`` / ``PROTOCOL_TLS_CLIENT`` give the modern
    context (no deprecation warning); ``PROTOCOL_TLSv1_2`` pins TLS 1.2.
    Versions below 1.2 are refused: this library's floor is TLS 1.2.
    """
    protocol = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
    if not isinstance(ssl_version, int) or isinstance(ssl_version, bool):
        raise ValueError(
            f"ssl_options['ssl_version'] must be an ssl.PROTOCOL_* constant, not {ssl_version!r}"
        )
    wrong_side = ssl.PROTOCOL_TLS_CLIENT if server_side else ssl.PROTOCOL_TLS_SERVER
    if ssl_version == wrong_side:
        side = "server" if server_side else "client"
        raise ValueError(f"ssl_options['ssl_version']={ssl_version!r} is not for a {side} stream")
    if ssl_version in (ssl.PROTOCOL_TLS, protocol):
        return ssl.SSLContext(protocol), False
    for name, version in _PINNED_VERSIONS.items():
        if ssl_version == getattr(ssl, name):
            if version < ssl.TLSVersion.TLSv1_2:
                raise ValueError(
                    f"ssl_options['ssl_version']=ssl.{name} is below TLS 1.2, which this "
                    "library refuses"
                )
            context = ssl.SSLContext(protocol)
            context.minimum_version = context.maximum_version = version
            return context, True
    raise ValueError(f"ssl_options['ssl_version']={ssl_version!r} is not a TLS protocol")


def make_ssl_context(
    ssl_options: ssl.SSLContext | dict[str, Any] | None, server_side: bool
) -> ssl.SSLContext:
    """Build the :class:`ssl.SSLContext` an SSLIOStream or TCPServer uses.

    An ``SSLContext`` is returned as it is. ``None`` (client only) and a dict
    give a context with verification on, TLS 1.2 at least; a dict's
    ``cert_reqs=ssl.CERT_NONE`` turns verification off. A dict may name
    Tornado's ``ssl_version`` (``ssl.PROTOCOL_TLS``, the side's
    ``PROTOCOL_TLS_SERVER``/``PROTOCOL_TLS_CLIENT``, or
    ``PROTOCOL_TLSv1_2`` to pin TLS 1.2; older versions are refused).
    """
    if isinstance(ssl_options, ssl.SSLContext):
        return ssl_options
    if ssl_options is None:
        if server_side:
            raise ValueError("ssl_options must give a certfile for a server-side TLS stream")
        ssl_options = {}
    if not isinstance(ssl_options, dict):
        raise TypeError(
            "ssl_options must be an ssl.SSLContext, a dict or None, "
            f"not {type(ssl_options).__name__}"
        )
    unknown = set(ssl_options) - _SSL_OPTION_KEYS
    if unknown:
        raise ValueError(
            f"ssl_options has unknown keys {sorted(unknown)}; known: {sorted(_SSL_OPTION_KEYS)}"
        )
    pinned = False
    if "ssl_version" in ssl_options:
        context, pinned = _context_for_version(ssl_options["ssl_version"], server_side)
    if server_side:
        if not ssl_options.get("certfile"):
            raise ValueError("ssl_options must give a certfile for a server-side TLS stream")
        if "ssl_version" not in ssl_options:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if "cert_reqs" in ssl_options:
            context.verify_mode = ssl_options["cert_reqs"]
    else:
        if "ssl_version" in ssl_options:
            # PROTOCOL_TLS_CLIENT verifies (CERT_REQUIRED, check_hostname);
            # create_default_context also loads the system's trusted CAs.
            if not ssl_options.get("ca_certs"):
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context = ssl.create_default_context()
        if "cert_reqs" in ssl_options:
            if ssl_options["cert_reqs"] == ssl.CERT_NONE:
                context.check_hostname = False
            context.verify_mode = ssl_options["cert_reqs"]
    if not pinned:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ssl_options.get("certfile"):
            context.load_cert_chain(ssl_options["certfile"], ssl_options.get("keyfile"))
        if ssl_options.get("ca_certs"):
            context.load_verify_locations(ssl_options["ca_certs"])
    except OSError as exc:
        # ssl's own message names neither the option nor the file.
        names = ", ".join(
            f"{key}={ssl_options[key]!r}"
            for key in ("certfile", "keyfile", "ca_certs")
            if ssl_options.get(key)
        )
        raise type(exc)(
            exc.errno, f"ssl_options: cannot load {names}: {exc.strerror or exc}"
        ) from exc
    if ssl_options.get("ciphers"):
        context.set_ciphers(ssl_options["ciphers"])
    return context
