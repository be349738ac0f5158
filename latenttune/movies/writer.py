"""Movie files: MP4 through imageio-ffmpeg, GIF through Pillow, chosen by the file suffix.

Frames arrive one at a time (``(H, W, 3)`` uint8 RGB) and go straight to the encoder, so a long
movie never has to fit in memory:

* ``.mp4``: :func:`imageio_ffmpeg.write_frames` pipes each frame into the ``ffmpeg`` binary that the
  imageio-ffmpeg wheel carries (nothing is downloaded at run time); H.264 in ``yuv420p``, which
  every player accepts and which needs an even width and height.
* ``.gif``: each frame is quantised to its own palette (median cut, no dithering, so flat areas
  compress well) and appended with Pillow's GIF block writers
  (:func:`PIL.GifImagePlugin.getheader`, :func:`PIL.GifImagePlugin.getdata`); only the rectangle
  that changed since the previous frame is stored. The movie loops forever.

The movie is written to a hidden temporary name next to ``path`` and renamed to ``path`` atomically
when it is complete; an error or interruption removes the temporary file and leaves any existing
``path`` untouched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.io.partial import PartialFile, hidden_partial_path
from latenttune.movies.render import check_size
from latenttune.validation import check_number

log = logging.getLogger(__name__)

__all__ = ["MovieWriter", "write_movie", "movie_format", "check_output", "SUFFIXES"]

#: Supported suffixes and their formats.
SUFFIXES = {".mp4": "mp4", ".gif": "gif"}


def movie_format(path: str | os.PathLike[str]) -> str:
    """``"mp4"`` or ``"gif"`` from the suffix of ``path`` (ValueError for anything else)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"`out` must end in one of {sorted(SUFFIXES)} (the suffix picks the format), got {str(path)!r}"
        )
    return SUFFIXES[suffix]


def _check_size(size: Any, fmt: str) -> tuple[int, int]:
    width, height = check_size(size)
    if fmt == "mp4" and (width % 2 or height % 2):
        raise ValueError(f"`size` must have an even width and height for MP4 (H.264 yuv420p), got {width}x{height}")
    return width, height


def check_output(path: str | os.PathLike[str], size: Any, fps: float = 12.0) -> tuple[str, tuple[int, int]]:
    """Check a movie's file name, size and rate before any work: returns ``(format, (width, height))``."""
    fmt = movie_format(path)
    check_number("fps", fps, low=0, open_low=True)
    return fmt, _check_size(size, fmt)


class MovieWriter(PartialFile):
    """Stream RGB frames into an MP4 or GIF file.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; ``.mp4`` or ``.gif``. The movie is written to a hidden temporary next to it
        (``partial_path``) and renamed onto it by :meth:`close`; :meth:`abort` (or an error)
        removes the temporary (:class:`latenttune.io.partial.PartialFile` with ``keep_partial=False``).
    size : (int, int)
        Frame ``(width, height)`` in pixels; every frame must have shape ``(height, width, 3)``.
    fps : float
        Frames per second (GIF stores delays in 1/100 s, so its rate is rounded to that).
    overwrite : bool
        Replace an existing ``path``; otherwise it is a FileExistsError.
    quality : float
        MP4 only: imageio-ffmpeg quality, 0 (worst) to 10 (best).
    colors : int
        GIF only: palette size per frame, 2 to 256.

    Examples
    --------
    >>> with MovieWriter("m.gif", (320, 180), fps=10) as movie:  # doctest: +SKIP
    ...     for frame in frames:
    ...         movie.append(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: tuple[int, int],
        fps: float = 12.0,
        *,
        overwrite: bool = False,
        quality: float = 7.0,
        colors: int = 128,
    ) -> None:
        self.format = movie_format(Path(path))
        # hidden name next to `path`, same suffix (ffmpeg picks the container by it)
        super().__init__(path, hidden_partial_path(path), keep_partial=False)
        self.size = _check_size(size, self.format)
        check_number("fps", fps, low=0, open_low=True)
        check_number("quality", quality, low=0, high=10)
        if not 2 <= int(colors) <= 256:
            raise ValueError(f"`colors` must be in [2, 256], got {colors!r}")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"`out` {str(self.path)!r} exists; pass overwrite=True (--overwrite) to replace it")
        if not self.path.parent.exists():
            raise FileNotFoundError(f"the folder of `out` does not exist: {self.path.parent}")
        self.fps = float(fps)
        self.quality = float(quality)
        self.colors = int(colors)
        self.frames_written = 0
        self._previous: np.ndarray | None = None
        self._fh: Any = None
        self._ffmpeg: Any = None
        try:
            if self.format == "mp4":
                self._open_mp4()
            else:
                self._fh = open(self.partial_path, "xb")  # noqa: SIM115 - closed in close()/abort()
        except BaseException:
            self.partial_path.unlink(missing_ok=True)
            raise

    # -- opening ------------------------------------------------------------------
    def _open_mp4(self) -> None:
        import imageio_ffmpeg

        self._ffmpeg = imageio_ffmpeg.write_frames(
            str(self.partial_path),
            self.size,
            fps=self.fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=self.quality,
            macro_block_size=1,  # the size is checked to be even; never rescale
            output_params=["-movflags", "+faststart"],
        )
        self._ffmpeg.send(None)  # start the ffmpeg process

    # -- writing ------------------------------------------------------------------
    def _check_frame(self, frame: Any) -> np.ndarray:
        a = np.asarray(frame)
        width, height = self.size
        if a.shape != (height, width, 3):
            raise ValueError(f"`frame` must have shape ({height}, {width}, 3) (RGB), got {a.shape}")
        if a.dtype != np.uint8:
            raise TypeError(f"`frame` must be uint8, got {a.dtype}")
        return np.ascontiguousarray(a)

    def append(self, frame: Any) -> None:
        """Encode one ``(height, width, 3)`` uint8 RGB frame."""
        if self._closed:
            raise ValueError(f"movie writer for {self.path} is closed")
        a = self._check_frame(frame)
        if self.format == "mp4":
            self._ffmpeg.send(a)
        else:
            self._append_gif(a)
        self.frames_written += 1

    def _append_gif(self, a: np.ndarray) -> None:
        from PIL import GifImagePlugin, Image

        delay_ms = 10 * max(1, round(100 / self.fps))  # GIF delays are whole 1/100 s
        if self._previous is None:
            box = (0, 0, a.shape[1], a.shape[0])
        else:
            changed = np.any(a != self._previous, axis=2)
            rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
            # an unchanged frame still needs a block to carry its delay: one pixel
            box = (0, 0, 1, 1) if rows.size == 0 else (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        x0, y0, x1, y1 = (int(v) for v in box)
        patch = Image.fromarray(a[y0:y1, x0:x1]).quantize(
            colors=self.colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        if self._previous is None:
            header, _ = GifImagePlugin.getheader(patch, None, {"loop": 0, "duration": delay_ms})
            self._fh.write(b"".join(header))
            blocks = GifImagePlugin.getdata(patch, (0, 0), duration=delay_ms)
        else:
            blocks = GifImagePlugin.getdata(patch, (x0, y0), duration=delay_ms, include_color_table=True)
        self._fh.write(b"".join(blocks))
        self._previous = a

    # -- closing (PartialFile hooks) ---------------------------------------------------
    def close(self) -> Path:
        """Finish the file and rename it to ``path`` atomically; returns ``path``."""
        return super().close()

    def abort(self) -> None:
        """Stop without writing ``path``; the temporary file is removed."""
        super().abort()

    def _finish(self) -> None:
        if self.frames_written == 0:
            raise ValueError(f"no frames were written to {self.path}")  # the temporary is removed
        if self.format == "mp4":
            self._ffmpeg.close()  # waits for ffmpeg to finish the file
        else:
            self._fh.write(b";")  # GIF trailer
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def _release(self) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.close()
        if self._fh is not None:
            self._fh.close()

    def _on_closed(self) -> None:
        log.info("wrote %d frames to %s", self.frames_written, self.path)

    def _on_discarded(self) -> None:
        log.info("discarded %s", self.partial_path)


def write_movie(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike[str],
    size: tuple[int, int],
    fps: float = 12.0,
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write an iterable of RGB frames to ``path`` (MP4 or GIF by suffix); see :class:`MovieWriter`."""
    with MovieWriter(path, size, fps, overwrite=overwrite, **options) as movie:
        for frame in frames:
            movie.append(frame)
    return movie.path
