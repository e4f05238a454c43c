"""User-facing errors. The CLI prints these as one clear line, never a traceback."""

from __future__ import annotations


class MtlmoodError(Exception):
    """Base class of every error caused by bad input, config or data (not by a bug)."""


class ConfigError(MtlmoodError):
    """A config file or override is invalid: unknown key, wrong type, bad value."""


class AudioDecodeError(MtlmoodError):
    """An audio file (or byte payload) cannot be decoded, is empty, or has zero length."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot decode audio {source!r}: {reason}")
        self.source = source
        self.reason = reason


class DatasetError(MtlmoodError):
    """Dataset metadata is missing or malformed."""


class CacheError(MtlmoodError):
    """A feature cache is missing, incomplete or was built with another feature config."""


class CheckpointError(MtlmoodError):
    """A checkpoint is missing, corrupt, or does not match the model/feature config."""
