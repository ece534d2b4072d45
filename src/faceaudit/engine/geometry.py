"""Pose and image quality of a detected face, computed from pixels and landmarks.

No model here: head pose comes from the five landmarks and a generic face's
proportions, quality from simple image statistics. Both are estimates; the docs
say how they are made so nobody mistakes them for more.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceaudit.engine.base import DetectedFace

# A generic adult face, in millimetres relative to the nose tip: eye centres
# 64 mm apart, 35 mm above and 30 mm behind it; mouth corners 22 mm below and
# 20 mm behind. The vertical proportions match MTCNN's landmarks on frontal faces
# (the nose tip sits about 60% of the way from the eye line to the mouth line).
EYE_HALF_WIDTH, EYE_HEIGHT, EYE_DEPTH = 32.0, 35.0, 30.0
MOUTH_DROP, MOUTH_DEPTH = 22.0, 20.0


def estimate_pose(face: DetectedFace, image_width: int, image_height: int) -> dict[str, float]:
    """Roll, Yaw and Pitch in degrees, as Rekognition's Pose.

    Roll: angle of the eye line (positive: the picture's right eye lower).
    Yaw: from how far the nose tip sits off the eye-mouth midline (positive:
    nose towards the picture's right). Pitch: from where the nose tip sits
    between the eye line and the mouth line (positive: chin raised). Exact for
    roll; for yaw and pitch as good as the generic face fits the person, so
    use them to filter (e.g. |Yaw| < 45), not to measure.
    """
    points = face.landmarks
    eye_left, eye_right = np.array(points["eyeLeft"]), np.array(points["eyeRight"])
    nose = np.array(points["nose"])
    mouth = (np.array(points["mouthLeft"]) + np.array(points["mouthRight"])) / 2.0
    eye_mid = (eye_left + eye_right) / 2.0
    dx, dy = eye_right - eye_left
    roll = math.atan2(dy, dx)
    # Undo the roll so the eye line is horizontal, then read yaw and pitch.
    cos_r, sin_r = math.cos(-roll), math.sin(-roll)

    def upright(point: np.ndarray) -> np.ndarray:
        x, y = point - eye_mid
        return np.array([x * cos_r - y * sin_r, x * sin_r + y * cos_r])

    eye_half = max(math.hypot(dx, dy) / 2.0, 1e-6)
    nose_u, mouth_u = upright(nose), upright(mouth)
    # Yaw: a turn by angle a moves the nose tip sideways by depth * sin(a) relative
    # to points behind it while the eyes close up to 2 * half_width * cos(a).
    midline_x = mouth_u[0] / 2.0  # midline at nose height: halfway between eye and mouth centres
    reference_depth = (EYE_DEPTH + MOUTH_DEPTH) / 2.0
    yaw = math.atan2((nose_u[0] - midline_x) / eye_half * EYE_HALF_WIDTH, reference_depth)
    # Pitch: with the head tipped by p (rotation about the horizontal axis) the
    # projected heights give t = (35c + 30s) / (57c + 10s), with t the nose's
    # fraction of the way from eyes to mouth; solve for p.
    span = mouth_u[1] if abs(mouth_u[1]) > 1e-6 else 1e-6
    t = nose_u[1] / span
    tipped_down = math.atan2(
        t * (EYE_HEIGHT + MOUTH_DROP) - EYE_HEIGHT, EYE_DEPTH - t * (EYE_DEPTH - MOUTH_DEPTH))
    return {"Roll": round(math.degrees(roll), 4), "Yaw": round(math.degrees(yaw), 4),
            "Pitch": round(-math.degrees(tipped_down), 4)}


def face_region(pixels: np.ndarray, face: DetectedFace) -> np.ndarray:
    """The face's box clipped to the image (at least one pixel)."""
    height, width = pixels.shape[:2]
    left = int(min(max(face.left, 0), width - 1))
    top = int(min(max(face.top, 0), height - 1))
    right = int(min(max(math.ceil(face.right), left + 1), width))
    bottom = int(min(max(math.ceil(face.bottom), top + 1), height))
    return pixels[top:bottom, left:right]


def estimate_quality(pixels: np.ndarray, face: DetectedFace) -> dict[str, float]:
    """Brightness and Sharpness of the face region, each 0-100 (higher is brighter/sharper).

    Brightness is the mean luma (ITU-R BT.601) scaled to 0-100. Sharpness is
    the variance of the Laplacian, a standard focus measure, on the face
    resized to 112 px so it does not depend on resolution, then mapped to
    0-100 by 100 * (1 - exp(-variance / 300)): about 50 for a typical
    in-focus face, near 0 for a blurred one.
    """
    region = face_region(pixels, face)
    gray = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY)
    brightness = float(gray.mean()) / 255.0 * 100.0
    normalized = cv2.resize(gray, (112, 112), interpolation=cv2.INTER_AREA)
    variance = float(cv2.Laplacian(normalized, cv2.CV_64F).var())
    sharpness = 100.0 * (1.0 - math.exp(-variance / 300.0))
    return {"Brightness": round(brightness, 4), "Sharpness": round(sharpness, 4)}
