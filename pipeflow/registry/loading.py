"""Loading a registered model safely, and what a model may hold to be registered.

A model file is loaded only after its hash is checked (the store addresses it by digest) and,
for skops files, only with the types recorded when it was registered, all on pipeflow's
allow-list (:data:`pipeflow.store.codecs.TRUSTED`): loading never runs code from the file.
:func:`trusted_types` is the check at registration, :func:`load_version_model` the one at load;
:func:`load_skops` is the guarded load itself, which ``models import`` shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeflow.errors import RegistryError, StoreError
from pipeflow.registry.records import model_ref
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.skops_import import skops_io

__all__ = ["load_skops", "load_version_model", "trusted_types"]


def load_version_model(store: ArtifactStore, record: dict[str, Any]) -> Any:
    """Load the model of a version record: hash-checked, types limited to what was recorded."""
    from pipeflow.store import codecs

    where = f"{record.get('name')}@{record.get('version')}"
    ref = model_ref(store, record, where)
    try:
        data = store.get(ref.digest)
    except StoreError as err:
        raise RegistryError(f"refusing to load model {where}: {err}") from None
    if ref.codec != "skops":
        return codecs.decode(ref.codec, data)
    allowed = [t for t in record.get("trusted_types") or [] if t.startswith(codecs.TRUSTED)]
    return load_skops(
        data,
        lambda found: allowed,
        refusing=f"refusing to load model {where}",
        refused_as="it contains types not recorded when it was registered",
        failed=f"refusing to load model {where}",
    )


def load_skops(
    data: bytes,
    allow: Callable[[list[str]], list[str]],
    *,
    refusing: str,
    refused_as: str,
    failed: str,
) -> Any:
    """Load a skops file trusting only the types ``allow`` returns for those the file holds; a
    file holding any other type is refused before anything is loaded (``{refusing}:
    {refused_as}: TYPES``), as is one that is not a skops file. ``failed`` heads the error of a
    load that fails. A registered version's load and ``models import`` both come here."""
    skops = skops_io()
    try:
        found = skops.get_untrusted_types(data=data)
    except Exception as err:  # not a skops zip at all
        raise RegistryError(f"{refusing}: not a readable skops file ({err})") from None
    trusted = allow(found)
    refused = sorted(set(found) - set(trusted))
    if refused:
        raise RegistryError(f"{refusing}: {refused_as}: {', '.join(refused)}")
    try:
        return skops.loads(data, trusted=trusted)
    except Exception as err:
        raise RegistryError(f"{failed}: {type(err).__name__}: {err}") from None


def trusted_types(codec: str, data: bytes) -> list[str]:
    """The non-default types a skops model holds; all must be on pipeflow's allow-list."""
    if codec != "skops":
        return []
    from pipeflow.store import codecs

    found = sorted(skops_io().get_untrusted_types(data=data))
    refused = [t for t in found if not t.startswith(codecs.TRUSTED)]
    if refused:
        raise RegistryError(
            f"refusing to register a model containing types outside pipeflow's allow-list: {', '.join(refused)}"
        )
    return found
