"""Cache keys: what makes two executions of a stage interchangeable.

key = sha256 over (stage type, type version, resolved config, extra fingerprint such as the
source of user code, and the content digests of the inputs by port). Nothing time-based enters
it: a stage is reused because its content matches, never because a file looks newer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pipeflow.core.jsonenc import encoder

#: canonical JSON, as ``json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)``
#: writes it: made once (a run asks for two digests a stage, see :mod:`pipeflow.core.jsonenc`);
#: encoding keeps no state between calls, so threads may share it
_canonical = encoder(sort_keys=True, separators=(",", ":"), default=str)


def digest_json(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (a value pipeflow builds: no cycles)."""
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def stage_key(
    type_name: str, version: str, config_digest: str, fingerprint: str, inputs: Mapping[str, str]
) -> str:
    """The cache key of one stage: its type and version, its config, its fingerprint (the source
    of its code, the content of the data it reads, the model version an alias names: whatever
    :meth:`Stage.fingerprint` and :meth:`Stage.store_fingerprint` add) and its inputs' digests.
    The fingerprint is keyed ``code`` for keys written before it carried data too."""
    return digest_json(
        {
            "type": type_name,
            "version": version,
            "config": config_digest,
            "code": fingerprint,
            "inputs": dict(inputs),
        }
    )
