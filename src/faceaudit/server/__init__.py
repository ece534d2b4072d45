"""HTTP server side of faceaudit: Rekognition's wire protocol (AWS JSON 1.1, SigV4)."""
