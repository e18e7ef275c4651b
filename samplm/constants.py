"""Names on disk, environment variables and defaults, in one place."""

from __future__ import annotations

#: Adapter directory layout (mirrors peft's file names).
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
MODEL_CARD_NAME = "README.md"

#: Optional target prototype beside an adapter's files (``samplm.adapter.prototype``) and its header.
PROTOTYPE_NAME = "prototype.safetensors"
PROTOTYPE_FORMAT = "samplm-prototype"
PROTOTYPE_HEADER_KEY = "samplm_prototype"

#: The example page's models folder (``samplm export --web``, ``samplm serve-web``) and its manifest.
WEB_MODELS_DIR = "models"
WEB_MANIFEST_NAME = "models.json"

#: Value of ``format`` in ``adapter_config.json`` and the versions this release reads. Version 2 adds the
#: PLM's score offsets (``plm.score_offset``), version 3 its mask mix (``plm.mask_mix``), version 4 its score
#: readout (``plm.score_readout``), version 5 its mask bias (``plm.mask_bias``).
ADAPTER_FORMAT = "samplm-adapter"
ADAPTER_FORMAT_VERSION = 5
SUPPORTED_FORMAT_VERSIONS = (1, 2, 3, 4, 5)
#: Weights each format version added: an older file lacks them and loads them as a fresh adapter holds
#: them (zero score offsets, the identity mix, a zero readout, a zero mask bias), i.e. plain SAM's behaviour
#: for that part.
ADDED_IN_FORMAT = {
    2: ("plm.score_offset",),
    3: ("plm.mask_mix",),
    4: ("plm.score_readout", "plm.score_readout_bias"),
    5: ("plm.mask_bias",),
}

#: Key of the JSON config embedded in the safetensors header metadata.
SAFETENSORS_CONFIG_KEY = "samplm_config"

#: Hub namespace searched for bare short names such as ``"nose"`` (-> ``samplm/nose``).
DEFAULT_HUB_NAMESPACE = "samplm"
ENV_HUB_NAMESPACE = "SAMPLM_HUB_NAMESPACE"

#: Local directory searched for bare short names (``<dir>/<name>/adapter_config.json``).
ENV_ADAPTERS_DIR = "SAMPLM_ADAPTERS_DIR"
DEFAULT_ADAPTERS_DIR = "~/.cache/samplm/adapters"

#: Hugging Face Hub environment variables honoured at call time (not only at import time).
ENV_HF_ENDPOINT = "HF_ENDPOINT"
ENV_HF_OFFLINE = "HF_HUB_OFFLINE"

#: Model-card metadata.
LIBRARY_NAME = "samplm"
PIPELINE_TAG = "mask-generation"
