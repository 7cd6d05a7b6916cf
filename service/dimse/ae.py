"""Build the sidecar's pynetdicom Application Entity from :class:`Settings`.

The AE accepts every storage SOP class in every transfer syntax pynetdicom knows
(uncompressed, deflated and compressed: the data set is kept as received, never
decoded), Verification, and the Study Root and Patient Root FIND, GET and MOVE models.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom._globals import ALL_TRANSFER_SYNTAXES
from pynetdicom.transport import ThreadedAssociationServer

from service.config import Settings

if TYPE_CHECKING:
    from service.dimse.scp import Handlers

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "PATIENT_ROOT_FIND",
    "STUDY_ROOT_FIND",
    "allowed_calling_aes",
    "build_ae",
    "start_server",
    "tls_context",
]

#: Our Implementation Class UID (a UUID-derived 2.25 UID) and version name, sent in
#: associations and written into the File Meta Information of received instances.
IMPLEMENTATION_CLASS_UID = "2.25.283712048467823158961738540436429013245"
IMPLEMENTATION_VERSION = "DICOMWEB_010"

_UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
# pynetdicom accepts, of the syntaxes a peer proposes, the first in *our* list. A peer
# proposing several can send any of them, so prefer what keeps its data as it is:
# compressed syntaxes first (no decompression before sending), then the uncompressed
# ones, Implicit VR Little Endian (the default every peer supports) last.
_NATIVE = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"]
_STORAGE_SYNTAXES = [
    *(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in (*_NATIVE, "1.2.840.10008.1.2")),
    *_NATIVE,
    "1.2.840.10008.1.2",
]
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
_RETRIEVE_MODELS = [
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
]


def allowed_calling_aes(settings: Settings) -> list[str]:
    return [t.strip() for t in settings.dimse_allowed_calling_aes.split(",") if t.strip()]


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.dimse_ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION
    ae.maximum_associations = settings.dimse_max_associations
    ae.acse_timeout = settings.dimse_acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.dimse_network_timeout
    # An association from a calling AE title not listed is rejected (A-ASSOCIATE-RJ,
    # reason "calling AE title not recognised").
    ae.require_calling_aet = allowed_calling_aes(settings)
    ae.add_supported_context(VERIFICATION, _UNCOMPRESSED)
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        # Both roles: we are the Storage SCP for C-STORE, and the SCU for the C-STORE
        # sub-operations of a C-GET on the same association (SCP/SCU role selection).
        ae.add_supported_context(
            context.abstract_syntax, _STORAGE_SYNTAXES, scu_role=True, scp_role=True
        )
    for model in (STUDY_ROOT_FIND, PATIENT_ROOT_FIND, *_RETRIEVE_MODELS):
        ae.add_supported_context(model, _UNCOMPRESSED)
    return ae


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None when DICOMWEB_DIMSE_TLS_CERT is not set."""
    if not settings.dimse_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.dimse_tls_cert, settings.dimse_tls_key or None)
    if settings.dimse_tls_ca:
        context.load_verify_locations(settings.dimse_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def start_server(ae: AE, settings: Settings, handlers: Handlers) -> ThreadedAssociationServer:
    server = ae.start_server(
        (settings.dimse_host, settings.dimse_port),
        block=False,
        ssl_context=tls_context(settings),
        evt_handlers=[
            (evt.EVT_C_ECHO, handlers.echo),
            (evt.EVT_C_STORE, handlers.store),
            (evt.EVT_C_FIND, handlers.find),
            (evt.EVT_C_GET, handlers.get),
            (evt.EVT_C_MOVE, handlers.move),
        ],
    )
    assert server is not None
    return server
