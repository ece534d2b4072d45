"""QualityFilter: which detected faces are good enough to index or search with.

Rekognition names the levels (NONE, AUTO, LOW, MEDIUM, HIGH) and the reasons a
face is left out, but not its rules. faceaudit's rules are below, in the open,
built on the engine's own Confidence, Pose and Quality estimates. AUTO is
MEDIUM. A face is left out for every rule it fails; all its reasons are listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faceaudit.errors import InvalidParameterException

LEVELS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class QualityRules:
    min_confidence: float  # detector confidence, 0-100
    min_face_pixels: float  # shorter side of the face box
    max_abs_yaw: float  # degrees
    max_abs_pitch: float
    min_brightness: float  # Quality.Brightness, 0-100
    min_sharpness: float  # Quality.Sharpness, 0-100


RULES = {
    "LOW": QualityRules(min_confidence=80, min_face_pixels=20, max_abs_yaw=90, max_abs_pitch=90,
                        min_brightness=5, min_sharpness=2),
    "MEDIUM": QualityRules(min_confidence=90, min_face_pixels=32, max_abs_yaw=60, max_abs_pitch=45,
                           min_brightness=10, min_sharpness=5),
    "HIGH": QualityRules(min_confidence=98, min_face_pixels=48, max_abs_yaw=40, max_abs_pitch=30,
                         min_brightness=20, min_sharpness=15),
}
RULES["AUTO"] = RULES["MEDIUM"]


def check_level(level: str | None, default: str) -> str:
    level = default if level is None else level
    if level not in LEVELS:
        raise InvalidParameterException(f"QualityFilter must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


def reasons_to_filter(detail: dict[str, Any], face_pixels: float, level: str) -> list[str]:
    """Rekognition's reason codes for leaving out a face with this FaceDetail; [] keeps it."""
    if level == "NONE":
        return []
    rules = RULES[level]
    reasons = []
    if abs(detail["Pose"]["Yaw"]) > rules.max_abs_yaw or abs(detail["Pose"]["Pitch"]) > rules.max_abs_pitch:
        reasons.append("EXTREME_POSE")
    if detail["Quality"]["Brightness"] < rules.min_brightness:
        reasons.append("LOW_BRIGHTNESS")
    if detail["Quality"]["Sharpness"] < rules.min_sharpness:
        reasons.append("LOW_SHARPNESS")
    if detail["Confidence"] < rules.min_confidence:
        reasons.append("LOW_CONFIDENCE")
    if face_pixels < rules.min_face_pixels:
        reasons.append("SMALL_BOUNDING_BOX")
    return reasons
