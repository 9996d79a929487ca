"""One canonical emotion vocabulary, and each dataset's spellings of it.

Datasets spell the same class differently (``happiness``/``Happy``/``ha``/``5``); adapters map every raw
label here, and the manifest records both the raw and the canonical label.
"""

from __future__ import annotations

CANONICAL = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
             # the states BP4D's tasks T4 and T6 elicit (no emotion dataset here has them)
             "embarrassment", "pain")

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
# CK+ has seven, the six and contempt (a study of the six drops contempt itself), coded 1-7 in its
# Emotion/*_emotion.txt files. Code 0 (neutral) is defined but labels no sequence: every sequence runs from
# a neutral face to the peak of an expression.
CKPLUS_CLASSES = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
CKPLUS_CODES = {1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness", 6: "sadness", 7: "surprise"}
# Oulu-CASIA has the six, one folder each per subject (Anger, Disgust, Fear, Happiness, Sadness, Surprise).
OULU_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
# MMI has the six, coded 1-6 in the Emotion Metatag of each recording's XML (DATASETS.md §5).
MMI_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
MMI_CODES = {"1": "anger", "2": "disgust", "3": "fear", "4": "happiness", "5": "sadness", "6": "surprise"}
# BP4D-Spontaneous labels action units, not emotions; a clip's class is the emotion its task T1-T8 was made
# to elicit (DATASETS.md §6: a convention, not a rating). Two of them, embarrassment (T4) and pain (T6), are
# in no other dataset's vocabulary.
BP4D_TASKS = {"T1": "happiness", "T2": "sadness", "T3": "surprise", "T4": "embarrassment", "T5": "fear",
              "T6": "pain", "T7": "anger", "T8": "disgust"}
BP4D_CLASSES = ("anger", "disgust", "embarrassment", "fear", "happiness", "pain", "sadness", "surprise")


def canonical(raw: str) -> str | None:
    """The canonical class of a raw label, or None when the spelling is unknown."""
    return ALIASES.get(raw.strip().lower())
