"""How long uploaded audio plays, for a message's ``metadata.length`` (milliseconds).

The format is told by the bytes (WAV, Ogg Opus/Vorbis/FLAC/Speex, FLAC, MP4/M4A,
MP3 with an ID3 tag or a frame sync at the start); data that shows none of these is
read as MP3 when its content type says MPEG. mutagen reads the stream headers (MP3
frame headers and Xing/VBRI/LAME counts, Ogg granule positions, RIFF chunks, MP4
atoms), never the samples. Uploads are anyone's bytes: anything that does not parse,
or whose duration is zero or beyond :data:`MAX_MS`, is None, never an error.
"""

from __future__ import annotations

import io
import math
from typing import Any

from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

MAX_MS = 24 * 3600 * 1000  # a longer claim (a forged Xing frame count, a granule position) is not believed
# Reads, seeks and tells a parse may make: real files need under a hundred (an MP3 after
# 1 MB of junk, ~2,000); 8 MB of empty MP4 atoms, Ogg pages or RIFF chunks ask for
# hundreds of thousands and would hold the CPU for seconds.
MAX_OPERATIONS = 10_000
MPEG_TYPES = frozenset({"audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg", "audio/mpg"})
MPEG_SYNCS = (b"\xff\xe2", b"\xff\xe3", b"\xff\xf2", b"\xff\xf3", b"\xff\xfa", b"\xff\xfb")


class _TooMuchWork(Exception):
    pass


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_OPERATIONS

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _TooMuchWork()


class _Budgeted(io.BytesIO):
    """The bytes as a file whose reads, seeks and tells are paid from ``budget``."""

    def __init__(self, data: bytes, budget: _Budget) -> None:
        super().__init__(data)
        self.budget = budget

    def read(self, size: int | None = -1, /) -> bytes:
        self.budget.spend()
        return super().read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        self.budget.spend()
        return super().seek(offset, whence)

    def tell(self) -> int:
        self.budget.spend()
        return super().tell()


def _kinds(head: bytes, content_type: str) -> tuple[Any, ...]:
    """The mutagen file types that ``head`` (the first bytes) may start."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return (WAVE,)
    if head[:4] == b"OggS":
        return (OggOpus, OggVorbis, OggFLAC, OggSpeex)  # each refuses a stream of another codec
    if head[:4] == b"fLaC":
        return (FLAC,)
    if head[4:8] == b"ftyp":
        return (MP4,)
    if head[:3] == b"ID3" or head[:2] in MPEG_SYNCS or content_type.lower() in MPEG_TYPES:
        return (MP3,)
    return ()


def duration_ms(data: bytes, content_type: str) -> int | None:
    """The duration of ``data`` in whole milliseconds; None when it cannot be told."""
    budget = _Budget()  # one for all the types tried
    for kind in _kinds(data[:12], content_type):
        try:
            info = kind(_Budgeted(data, budget)).info
            seconds = float(info.length)
        except Exception:  # mutagen's errors and its parsers' own slips on hostile bytes
            continue
        if getattr(info, "sketchy", False):  # MP3: fewer than 4 frames in a row, likely not MPEG at all
            continue
        if math.isfinite(seconds) and 0 < seconds * 1000 <= MAX_MS:
            return max(round(seconds * 1000), 1)
    return None
