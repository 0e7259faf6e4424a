"""Small WebP thumbnails of the report's images, made once and reused.

A thumbnail is named after its source file's identity (device, inode, size, modification time), so
rewriting the report only makes thumbnails for new or changed images, and files that are hard links
of one image share one thumbnail. Thumbnails no page uses any more are removed by :meth:`Thumbnails.prune`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from devvis import io as dio

#: Longest side of a thumbnail, in pixels (the layer grid shows them at 72 CSS pixels).
SIZE = 96


class Thumbnails:
    """Thumbnails of source images in ``folder``; :meth:`of` gives (and makes) one."""

    def __init__(self, folder: Path, size: int = SIZE):
        self.folder, self.size = Path(folder), size
        self.used: set[str] = set()
        self.made = 0
        self._known: dict[str, Path | None] = {}

    def of(self, source: Path) -> Path | None:
        """The thumbnail of ``source`` (made now if missing); None when the image cannot be read."""
        key = str(source)
        if key not in self._known:
            self._known[key] = self._make(source)
        return self._known[key]

    def _make(self, source: Path) -> Path | None:
        try:
            st = source.stat()
        except OSError:
            return None
        key = f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{self.size}"
        name = hashlib.sha1(key.encode()).hexdigest()[:20] + ".webp"
        out = self.folder / name
        if name not in self.used and not out.is_file():
            from PIL import Image

            try:
                with Image.open(source) as im:
                    im.draft("RGB", (self.size, self.size))  # JPEG: decode at a reduced scale, much faster
                    im = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
                    im.thumbnail((self.size, self.size), Image.Resampling.BICUBIC, reducing_gap=2.0)
                    buf = io.BytesIO()
                    im.save(buf, format="WEBP", quality=70, method=0)  # method 0: 2x faster, ~10% larger
            except (OSError, ValueError):
                return None
            dio.atomic_write_bytes(out, buf.getvalue(), sync=False)
            self.made += 1
        self.used.add(name)
        return out

    def prune(self) -> int:
        """Remove the thumbnails no page of this report uses; returns how many."""
        n = 0
        for p in self.folder.glob("*.webp") if self.folder.is_dir() else []:
            if p.name not in self.used:
                p.unlink(missing_ok=True)
                n += 1
        return n
