"""What the web page adds to Gradio's: its CSS, the script that refuses too-large uploads in
the browser, and the start-up hint for a public link in the command's words
(:func:`captioning.app.page.serve` passes them to Gradio)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from captioning.errors import CaptioningError

__all__ = [
    "GRADIO_SHARE_HINT",
    "PAGE_CSS",
    "SHARE_HINT",
    "HintFilter",
    "file_size_bytes",
    "upload_guard",
]

#: the n-best table: rank and score on one line each (a narrow window wrapped "-12.3456" inside
#: its cell); the caption column takes the rest
PAGE_CSS = """
#nbest table th:nth-child(-n+2), #nbest table td:nth-child(-n+2) {
  white-space: nowrap; word-break: keep-all; overflow-wrap: normal; width: 1%;
}
"""

#: in the page: an upload larger than the server's limit is stopped in the browser, before
#: Gradio sees it (Gradio would show a fading pop-up and clear the image, caption and maps):
#: the status line says so and the previous image, caption and maps stay
_UPLOAD_GUARD = """<script>
(function () {
  var LIMIT = %(limit)d, LIMIT_TEXT = %(limit_text)s;
  function status() { return document.getElementById("status"); }
  function clear() {
    var old = document.getElementById("upload-error");
    if (old) { old.remove(); }
  }
  function refuse(file) {
    clear();
    var line = document.createElement("p");
    line.id = "upload-error";
    var strong = document.createElement("strong");
    strong.textContent = "Error:";
    line.appendChild(strong);
    line.appendChild(document.createTextNode(" " + file.name + " is " +
      (file.size / 1048576).toFixed(1) + " MB, over this page's " + LIMIT_TEXT +
      " upload limit (the server's --max-file-size); the previous image is kept"));
    var box = status();
    if (box) { box.insertBefore(line, box.firstChild); }
  }
  function guard(event, files) {
    var inImage = event.target.closest && event.target.closest("#image");
    if (!inImage || !files || !files.length) { return; }
    var big = Array.prototype.filter.call(files, function (f) { return f.size > LIMIT; });
    if (!big.length) { clear(); return; }
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.target.value !== undefined && event.type === "change") { event.target.value = ""; }
    refuse(big[0]);
  }
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("input[type=file]")) { guard(e, e.target.files); }
  }, true);
  document.addEventListener("drop", function (e) {
    guard(e, e.dataTransfer && e.dataTransfer.files);
  }, true);
  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest("#run, #examples")) { clear(); }
  }, true);
})();
</script>"""

#: Gradio's own hint for a public link names its Python argument, not the command's flag
GRADIO_SHARE_HINT = "* To create a public link, set `share=True` in `launch()`."
SHARE_HINT = "* To create a public link, start the page with --share (it then goes online)."

_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def file_size_bytes(size: str | int) -> int:
    """``"20mb"`` (units b, kb, mb, gb, tb, 1024-based as Gradio reads them) or bytes -> bytes.

    Raises:
        CaptioningError: a size that is not a whole number with one of those units.
    """
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", str(size).lower())
    if match is None or (match[2] or "b") not in _SIZE_UNITS:
        raise CaptioningError(
            f"max file size {size!r} is not a size; write it as a whole number with a unit, "
            "e.g. 20mb (units: b, kb, mb, gb, tb)"
        )
    return int(match[1]) * _SIZE_UNITS[match[2] or "b"]


def upload_guard(max_file_size: str | int) -> str:
    """The page's ``<head>`` script refusing uploads over `max_file_size` in the browser."""
    limit = file_size_bytes(max_file_size)
    text = max_file_size if isinstance(max_file_size, str) else f"{limit} bytes"
    return _UPLOAD_GUARD % {"limit": limit, "limit_text": json.dumps(text.upper())}


class HintFilter(io.TextIOBase):
    """Standard output while Gradio launches, with its share hint replaced by `hint`."""

    def __init__(self, out: Any, hint: str) -> None:
        self.out, self.hint = out, hint

    def write(self, text: str) -> int:
        self.out.write(text.replace(GRADIO_SHARE_HINT, self.hint))
        if "\n" in text:  # start-up lines show at once, also when piped to a file
            self.out.flush()
        return len(text)

    def flush(self) -> None:
        self.out.flush()
