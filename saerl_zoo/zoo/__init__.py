"""The zoo: a registry of pretrained SAEs and probes, published to and pulled from the Hugging Face Hub.

    from saerl_zoo.zoo import list_artifacts, load_sae, load_probe, pull, publish
    for art in list_artifacts(kind="sae"):
        print(art.name, art.model.id, art.hook.module)
    sae = load_sae("saerl-tiny-math/sae")          # embedded: works offline
    probe = load_probe("saerl-tiny-math/difficulty-probe")

Names are imported lazily so `import saerl_zoo.zoo` stays cheap.
"""

from __future__ import annotations

from saerl_zoo._lazy import lazy_exports

_EXPORTS = {
    "list_artifacts": "saerl_zoo.zoo.api",
    "get_artifact": "saerl_zoo.zoo.api",
    "get_catalog": "saerl_zoo.zoo.registry",
    "load_sae": "saerl_zoo.zoo.api",
    "load_probe": "saerl_zoo.zoo.api",
    "pull": "saerl_zoo.zoo.api",
    "check_sae": "saerl_zoo.zoo.api",
    "verify_cache": "saerl_zoo.zoo.api",
    "VerificationError": "saerl_zoo.zoo.api",
    "REFERENCE_TEXTS": "saerl_zoo.zoo.api",
    "publish": "saerl_zoo.zoo.publishing",
    "render_card": "saerl_zoo.zoo.publishing",
    "PublishResult": "saerl_zoo.zoo.publishing",
    "save_sae": "saerl_zoo.zoo.formats",
    "IntegrityError": "saerl_zoo.zoo.hub",
    "UnsafePathError": "saerl_zoo.zoo.hub",
    "Artifact": "saerl_zoo.zoo.registry",
    "Catalog": "saerl_zoo.zoo.registry",
    "CatalogError": "saerl_zoo.zoo.registry",
    "UnknownArtifactError": "saerl_zoo.zoo.registry",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
