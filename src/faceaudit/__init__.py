"""faceaudit: self-hosted face recognition with Rekognition's API that measures its own errors."""

__version__ = "0.1.0"
