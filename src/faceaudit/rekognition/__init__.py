"""Rekognition's operations as plain functions over an engine (and, later, storage)."""

from faceaudit.rekognition.faces import compare_faces, detect_faces

__all__ = ["compare_faces", "detect_faces"]
