"""Rekognition's error vocabulary, as Python exceptions.

Every error a caller can cause is raised as one of these, named exactly as
Amazon Rekognition names it, so that the same name reaches a Python caller, the
command line and (later) a boto3 client over the wire.
"""

from __future__ import annotations


class RekognitionError(Exception):
    """Base of all errors faceaudit reports to callers.

    ``code`` is Rekognition's error name (the ``__type`` on the wire) and
    ``http_status`` the status Rekognition answers it with.
    """

    code = "InternalServerError"
    http_status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"Code": self.code, "Message": self.message}


class _ClientError(RekognitionError):
    http_status = 400


class InvalidParameterException(_ClientError):
    code = "InvalidParameterException"


class InvalidImageFormatException(_ClientError):
    code = "InvalidImageFormatException"


class ImageTooLargeException(_ClientError):
    code = "ImageTooLargeException"


class InvalidS3ObjectException(_ClientError):
    code = "InvalidS3ObjectException"


class ResourceNotFoundException(_ClientError):
    code = "ResourceNotFoundException"


class ResourceAlreadyExistsException(_ClientError):
    code = "ResourceAlreadyExistsException"


class AccessDeniedException(_ClientError):
    code = "AccessDeniedException"


class ConflictException(_ClientError):
    code = "ConflictException"


class InvalidPaginationTokenException(_ClientError):
    code = "InvalidPaginationTokenException"


class ServiceQuotaExceededException(_ClientError):
    code = "ServiceQuotaExceededException"


# Protocol errors of AWS JSON 1.1 services (raised by faceaudit.server.wire).
class SerializationException(_ClientError):
    """The request body is not JSON, or does not deserialise into the operation's input."""

    code = "SerializationException"


class UnknownOperationException(_ClientError):
    """X-Amz-Target is missing or names no Rekognition operation."""

    code = "UnknownOperationException"


# Authentication errors, named and numbered as AWS JSON 1.1 services answer them
# (sources in faceaudit/server/sigv4.py).
class MissingAuthenticationTokenException(_ClientError):
    """No Authorization header and no presigned query parameters."""

    code = "MissingAuthenticationTokenException"


class IncompleteSignatureException(_ClientError):
    """The signature information is malformed or incomplete."""

    code = "IncompleteSignatureException"


class InvalidSignatureException(_ClientError):
    """The signature is well formed but wrong, out of date or scoped wrongly."""

    code = "InvalidSignatureException"


class UnrecognizedClientException(_ClientError):
    """The access key id is not one this server knows."""

    code = "UnrecognizedClientException"


class ThrottlingException(_ClientError):
    """Too much is in flight (request bodies held in memory); retry later.

    Rekognition models it; boto3 retries it with backoff.  HTTP 400 as AWS's
    common errors list it.
    """

    code = "ThrottlingException"


class RequestTimeoutException(_ClientError):
    """The client did not send its request body in time (faceaudit.server.app)."""

    code = "RequestTimeoutException"


class InternalServerError(RekognitionError):
    code = "InternalServerError"
    http_status = 500


class OutOfStorageError(InternalServerError):
    """The server's disk (or quota) is full; sent as InternalServerError with a clear message."""
