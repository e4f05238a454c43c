"""One track of a batch run, decoded from where it is (a local path or a URI): only the bytes
the decoder asks for are read, and a failure's reason names its real cause.

    features = track_features("s3://bucket/audio/a.mp3", card.features, "fast")   # (t, n_mels)
    # AudioDecodeError(location, "file not found" | "the file is empty (0 bytes)" |
    #                  "cannot decode: libsndfile: Format not recognised; audioread: NoBackendError")

libsndfile reads the track through a Python file object (a buffered local file, or a
pyarrow file of the object store read in ``READ_BLOCK`` ranged GETs) and stops after the
first ``max_seconds``: a 3-minute FLAC costs ~16 % of its bytes, where reading whole files
(Ray Data's ``read_binary_files``) costs all of them. The samples are those of
mtlmood.audio.load_audio (same decoder, same frame count, same downmix and resampler), so
batch rows equal what ``Predictor.predict_file`` and the HTTP endpoint compute.

Why a file object even for local files: opening a *path* lets libsndfile guess the codec
from the suffix, and a corrupt ``.mp3`` then fails with libsndfile's "File does not exist
or is not a regular file (possibly a pipe?)", which names no real cause (the file exists).
Read through a file object, the same bytes give "Format not recognised". A local file
that libsndfile cannot read still gets librosa's audioread fallback (m4a where ffmpeg is
installed), as in load_audio; a URI does not (audioread needs a local file).
"""

from __future__ import annotations

import io
import os
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

# The steps after reading are load_audio's own (same samples): its private helpers on purpose.
from mtlmood.audio import finish_wave, frames_to_read, read_audioread
from mtlmood.errors import AudioDecodeError
from mtlmood.storage import filesystem, is_uri

if TYPE_CHECKING:
    from mtlmood.config import FeatureConfig
    from mtlmood.features import MelMethod

DECODE_PREFIX = "cannot decode: "  # the reason of a track whose bytes were read but not decoded
READ_BLOCK = 1 << 20  # bytes per read of a remote file: one ranged GET, not one per 8 KiB libsndfile asks


def _open_local(path: str) -> IO[bytes]:
    """A buffered local file, or AudioDecodeError naming why it cannot be read."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise AudioDecodeError(path, "file not found") from None
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot read the file: {exc.strerror or exc}") from None
    if not os.path.isfile(path):
        raise AudioDecodeError(path, "not a regular file")
    if size == 0:
        raise AudioDecodeError(path, "the file is empty (0 bytes)")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot read the file: {exc.strerror or exc}") from None


def _open_remote(location: str) -> IO[bytes]:
    """A buffered, seekable reader of an object (ranged GETs), or AudioDecodeError."""
    import pyarrow.fs

    fs, path = filesystem(location)
    try:
        info = fs.get_file_info(path)
        if info.type == pyarrow.fs.FileType.NotFound:
            raise AudioDecodeError(location, "file not found")
        if info.type != pyarrow.fs.FileType.File:
            raise AudioDecodeError(location, "not a regular file")
        if not info.size:
            raise AudioDecodeError(location, "the file is empty (0 bytes)")
        handle: Any = fs.open_input_file(path)
    except OSError as exc:
        raise AudioDecodeError(location, f"cannot read the file: {exc}".splitlines()[0]) from None
    # pyarrow's file has readinto/seek/tell: a raw stream that io.BufferedReader can buffer.
    return io.BufferedReader(handle, buffer_size=READ_BLOCK)


def _libsndfile_reason(exc: Exception) -> str:
    """libsndfile's own words ("Format not recognised"), without the "Error opening <file>:" prefix."""
    message = str(getattr(exc, "error_string", "") or exc)
    if message.startswith("Error opening") and ": " in message:
        message = message.split(": ", 1)[1]
    return message.strip().rstrip(".") or type(exc).__name__


def read_track(location: str, cfg: "FeatureConfig") -> np.ndarray:
    """The float32 mono wave at ``cfg.sample_rate`` of the first ``cfg.max_seconds`` of a
    track; AudioDecodeError(location, reason) when it cannot be read or decoded."""
    remote = is_uri(location)
    handle = _open_remote(location) if remote else _open_local(location)
    with handle:
        try:
            with sf.SoundFile(handle) as sound:
                rate = sound.samplerate
                wave = sound.read(frames=frames_to_read(cfg, rate), dtype="float32", always_2d=False)
        except sf.SoundFileError as exc:
            reason = f"libsndfile: {_libsndfile_reason(exc)}"
            if remote:
                raise AudioDecodeError(location, DECODE_PREFIX + reason) from None
            try:
                wave, rate = read_audioread(location, cfg)
            except Exception as fallback:  # audioread raises assorted types (NoBackendError, EOFError, ...)
                said = f"{type(fallback).__name__}: {fallback}" if str(fallback) else type(fallback).__name__
                raise AudioDecodeError(location, f"{DECODE_PREFIX}{reason}; audioread: {said}") from None
        except OSError as exc:  # the store failed mid-file (a dropped connection, a deleted object)
            raise AudioDecodeError(location, f"cannot read the file: {exc}".splitlines()[0]) from None
    try:
        return finish_wave(wave, rate, cfg, location)
    except AudioDecodeError as exc:  # no samples, NaN samples: decoded, but not audio we can use
        raise AudioDecodeError(location, DECODE_PREFIX + exc.reason) from None


def track_features(location: str, cfg: "FeatureConfig", method: "MelMethod" = "fast") -> np.ndarray:
    """(t, n_mels) log-mel features of a track (mtlmood.features.log_mel of ``read_track``)."""
    from mtlmood.features import log_mel

    return log_mel(read_track(location, cfg), cfg, method)


def failure_reason(exc: BaseException) -> str:
    """The reason a batch row gives for a track that raised ``exc`` while being scored."""
    if isinstance(exc, AudioDecodeError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


__all__ = ["DECODE_PREFIX", "READ_BLOCK", "failure_reason", "read_track", "track_features"]
