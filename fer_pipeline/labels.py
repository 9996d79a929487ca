"""One canonical emotion vocabulary, and each dataset's spellings of it.

Datasets spell the same class differently (``happiness``/``Happy``/``ha``/``5``); adapters map every raw
label here, and the manifest records both the raw and the canonical label.
"""

from __future__ import annotations

CANONICAL = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")

# Lower-cased raw spellings -> canonical class.
ALIASES: dict[str, str] = {
    **{name: name for name in CANONICAL},
    "an": "anger", "angry": "anger",
    "di": "disgust", "disgusted": "disgust",
    "fe": "fear", "fearful": "fear", "afraid": "fear",
    "ha": "happiness", "happy": "happiness", "joy": "happiness",
    "sa": "sadness", "sad": "sadness",
    "su": "surprise", "surprised": "surprise",
    "ne": "neutral",
    "co": "contempt",
}

# eNTERFACE'05 has six classes, no neutral.
ENTERFACE_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
# AFEW 7.0 has seven: the six and neutral (folders Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise).
AFEW_CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
ENTERFACE_CODES = {"anger": "an", "disgust": "di", "fear": "fe", "happiness": "ha", "sadness": "sa",
                   "surprise": "su"}


def canonical(raw: str) -> str | None:
    """The canonical class of a raw label, or None when the spelling is unknown."""
    return ALIASES.get(raw.strip().lower())
