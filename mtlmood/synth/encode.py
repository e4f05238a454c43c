"""Encoding rendered audio into files: wav/flac (16-bit PCM), ogg (Vorbis) and mp3 through
libsndfile, with Ogg's random stream serial number replaced by a fixed one (and every
page's CRC recomputed), so the same song always encodes to the same bytes.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from mtlmood.fileio import atomic_write_bytes

# file extension -> (soundfile container, subtype)
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, init 0) through zlib's
    reflected one: reverse each byte's bits in, reverse the 32-bit result out."""
    raw = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def _fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """libsndfile picks a random Ogg stream serial number; set a fixed one (and fix
    every page's CRC) so that the same song encodes to the same bytes."""
    # Page header (RFC 3533): "OggS", ..., serial at bytes 14-17, CRC at 22-25, the
    # segment count at 26, then one length byte per segment; the body follows.
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise RuntimeError("unexpected Ogg page layout from libsndfile")  # a bug, not user input
        n_segments = out[pos + 26]
        size = 27 + n_segments + sum(out[pos + 27 : pos + 27 + n_segments])
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"  # the CRC is computed with its own field zeroed
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos : pos + size])).to_bytes(4, "little")
        pos += size
    return bytes(out)


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str, serial: int = 1) -> bytes:
    """Encode mono float audio as ``fmt`` (wav/flac: 16-bit PCM; ogg: Vorbis; mp3), deterministically.

    ``serial`` is the Ogg stream serial number (ignored by the other formats).
    """
    container, subtype = FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format=container, subtype=subtype)
    data = buffer.getvalue()
    return _fix_ogg_serial(data, serial) if fmt == "ogg" else data


def write_audio(path: Path, wave: np.ndarray, sample_rate: int, serial: int = 1) -> None:
    """Encode ``wave`` in the format named by ``path``'s suffix and write it atomically,
    so an interrupted run never leaves a truncated file that a resumed run would keep."""
    atomic_write_bytes(path, encode_audio(wave, sample_rate, path.suffix.lstrip("."), serial))
