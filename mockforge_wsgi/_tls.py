"""TLS files checked before anything starts: a certificate, its key, a CA bundle.

gunicorn checks only that ``certfile`` and ``keyfile`` exist, and then each worker
fails to boot (or asks for a passphrase on the terminal) when one is wrong; a proxy
finds a bad CA bundle on its first request. Here each file is read and loaded the way
the server will load it, so a wrong one is one error naming how it was given (the flag
or the variable), its value and what is wrong with it.

Usage::

    check_server_files(GivenFile("cert.pem", "--certfile cert.pem"),
                       GivenFile("key.pem", "--keyfile key.pem"), None)
"""

from __future__ import annotations

import ssl
from typing import NamedTuple

__all__ = ["GivenFile", "TLSFileError", "check_ca_file", "check_server_files"]


class TLSFileError(ValueError):
    """A TLS file that cannot serve: the message names it as the user gave it."""


class GivenFile(NamedTuple):
    """A file's path, and how the user gave it (``--certfile cert.pem``,
    ``MOCKFORGE_CERTFILE=cert.pem``), for the error."""

    path: str
    shown: str


class _PassphraseAsked(Exception):
    pass


def _no_passphrase() -> str:
    # OpenSSL would otherwise ask on the terminal, in every gunicorn worker.
    raise _PassphraseAsked


def _readable(given: GivenFile) -> None:
    try:
        with open(given.path, "rb"):
            pass
    except OSError as error:
        raise TLSFileError(f"{given.shown}: cannot read it ({error.strerror})") from None


def check_ca_file(given: GivenFile) -> None:
    """``given`` is a readable PEM bundle of at least one certificate."""
    _readable(given)
    try:
        ssl.create_default_context().load_verify_locations(cafile=given.path)
    except ssl.SSLError:
        raise TLSFileError(
            f"{given.shown}: holds no PEM certificate (expected CA certificates, "
            "-----BEGIN CERTIFICATE-----)"
        ) from None


def check_server_files(
    certfile: GivenFile, keyfile: GivenFile | None, ca_certs: GivenFile | None
) -> None:
    """The certificate and its key load together as a server's (the key may be in
    ``certfile`` when ``keyfile`` is None), unencrypted; ``ca_certs`` is a CA bundle."""
    for given in (certfile, keyfile, ca_certs):
        if given is not None:
            _readable(given)
    try:
        ssl.create_default_context().load_verify_locations(cafile=certfile.path)
    except ssl.SSLError:
        raise TLSFileError(
            f"{certfile.shown}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    key = keyfile or certfile
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile.path, keyfile and keyfile.path, password=_no_passphrase)
    except _PassphraseAsked:
        raise TLSFileError(
            f"{key.shown}: the private key is encrypted, and gunicorn cannot be given its "
            f"passphrase; decrypt it (openssl pkey -in {key.path} -out plain-key.pem)"
        ) from None
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise TLSFileError(
                f"{key.shown}: the private key does not match the certificate of {certfile.shown}"
            ) from None
        if keyfile is None:
            raise TLSFileError(
                f"{certfile.shown}: holds no private key; give it with --keyfile"
            ) from None
        raise TLSFileError(
            f"{keyfile.shown}: holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from None
    if ca_certs is not None:
        check_ca_file(ca_certs)
