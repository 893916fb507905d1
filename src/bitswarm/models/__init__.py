"""Model artifacts: import Llama-family checkpoints into the store, make tiny test models, generate.

Nothing here reaches for a model hub: the offline flags are set before transformers is imported.
"""

import os

from bitswarm.errors import BitswarmError

for _flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_flag, "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# transformers' GGUF reader draws a raw tqdm bar on stderr; tqdm reads this when first imported.
os.environ.setdefault("TQDM_DISABLE", "1")


class ModelError(BitswarmError):
    """A model that cannot be imported, found or loaded; the message says what is allowed."""
