"""A self-contained HTML page of evaluated images: captions, references, per-image scores.

:func:`write_html_report` writes one file (inline CSS and JavaScript, base64 JPEG thumbnails, no
external assets) that any browser opens offline; its table sorts by clicking a column header and
starts worst CIDEr first.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from captioning.data.images import ImageLoadError, load_image, to_rgb
from captioning.evaluation.grounding import GroundingReport
from captioning.visualize.attention import ImageSource

__all__ = ["REPORT_METRICS", "ReportItem", "report_items", "write_html_report"]

log = logging.getLogger(__name__)

#: per-image metrics shown in the report (when present), with their column labels
REPORT_METRICS = {
    "CIDEr": "CIDEr",
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "SPICE": "SPICE",
    "hallucinated": "hallucinated objects",
}


@dataclass
class ReportItem:
    """One row of the HTML report.

    Attributes:
        image_id: the image's id.
        caption: the generated caption.
        references: its reference captions.
        scores: per-image metrics under the official keys (``CIDEr``, ``Bleu_4``, ...), and
            ``hallucinated`` (objects named that the image does not hold) with ground truth.
        image: a path or PIL image for the thumbnail, or None.
        tokens: the caption's tokens when some are marked (None: the caption as it is).
        marked: positions in `tokens` of hallucinated words, shown highlighted.
        name: the image's file name, what its row shows ("" : the id is shown instead).
    """

    image_id: int
    caption: str
    references: Sequence[str]
    scores: Mapping[str, float]
    image: ImageSource | None = None
    tokens: Sequence[str] | None = None
    marked: frozenset[int] = frozenset()
    name: str = ""


def report_items(
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    per_image: Mapping[int, Mapping[str, float]],
    images: Mapping[int, ImageSource] | None = None,
    grounding: GroundingReport | None = None,
    names: Mapping[int, str] | None = None,
) -> list[ReportItem]:
    """Rows for :func:`write_html_report`, one per predicted image, in prediction order.

    Args:
        references: image id -> reference captions.
        predictions: image id -> generated caption.
        per_image: image id -> scores (``ScoreReport.per_image``).
        images: image id -> path or PIL image, for thumbnails (None: no thumbnails).
        grounding: the grounded metrics' report: each caption's hallucinated words are marked
            and counted (None: no grounding).
        names: image id -> file name shown in its row (default: the name of its path in
            `images`, when it is a path).

    Returns:
        The items.
    """
    images, names = images or {}, names or {}
    items = []
    for i, caption in predictions.items():
        image = images.get(i)
        name = names.get(i) or (Path(image).name if isinstance(image, str | os.PathLike) else "")
        item = ReportItem(
            i,
            caption,
            list(references.get(i, ())),
            dict(per_image.get(i, {})),
            image,
            name=name,
        )
        checked = grounding.per_image.get(i) if grounding is not None else None
        if checked is not None:
            item.scores["hallucinated"] = len(checked.hallucinated)
            item.tokens, item.marked = checked.tokens, frozenset(checked.hallucinated_positions)
        items.append(item)
    return items


def _caption_html(item: ReportItem) -> str:
    """The caption, its hallucinated words in ``<mark>`` (the tokens shown when any are)."""
    if item.tokens is None:
        return html.escape(item.caption)
    words = [
        f'<mark title="not in the image">{html.escape(w)}</mark>' if k in item.marked else
        html.escape(w)
        for k, w in enumerate(item.tokens)
    ]  # fmt: skip
    return " ".join(words)


def _thumbnail(image: ImageSource, size: int) -> str | None:
    try:
        picture = (to_rgb(image) if isinstance(image, Image.Image) else load_image(image)).copy()
    except ImageLoadError as exc:
        log.warning("no thumbnail: %s", exc)
        return None
    picture.thumbnail((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<img src="data:image/jpeg;base64,{data}" width="{picture.width}" '
        f'height="{picture.height}" alt="">'
    )


def _number(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}#captions th[data-key]{cursor:pointer;background:#f3f3f3;white-space:nowrap;
user-select:none}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}td.num{text-align:right;
font-variant-numeric:tabular-nums}ul{margin:0;padding-left:1.1em;color:#555}
.caption{font-weight:600}#summary{display:flex;flex-wrap:wrap;gap:6px 8px;margin:0;padding:0;
max-width:100%}#summary div{border:1px solid #ddd;border-radius:4px;padding:3px 8px;
text-align:right}#summary dt{font-size:12px;color:#555;white-space:nowrap}#summary dd{margin:0;
font-variant-numeric:tabular-nums}td.file{white-space:nowrap}
mark{background:#ffd6d6;color:#900;text-decoration:line-through wavy #c00}"""

_JS = """(function () {
  var table = document.getElementById("captions"), body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function value(row, col, numeric) {
    var cell = row.cells[col];
    return numeric ? parseFloat(cell.getAttribute("data-value")) : cell.textContent.toLowerCase();
  }
  function sortBy(col, dir) {
    var numeric = heads[col].getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      if (numeric && isNaN(x) !== isNaN(y)) { return isNaN(x) ? 1 : -1; }  // n/a last
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    heads.forEach(function (th) { th.removeAttribute("aria-sort"); });
    heads[col].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    table.setAttribute("data-sorted", heads[col].getAttribute("data-key") + (dir > 0 ? " ascending" : " descending"));
  }
  function sortByKey(key, dir) {
    heads.forEach(function (th, col) { if (th.getAttribute("data-key") === key) { sortBy(col, dir); } });
  }
  heads.forEach(function (th, col) {
    if (!th.hasAttribute("data-key")) { return; }
    th.addEventListener("click", function () {
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      sortBy(col, dir);
      try {  // remember the order in the address: #sort=KEY (ascending) or #sort=-KEY
        history.replaceState(null, "", "#sort=" + (dir < 0 ? "-" : "") + th.getAttribute("data-key"));
      } catch (e) { /* some browsers refuse this for file:// pages */ }
    });
  });
  var wanted = /^#sort=(-?)(.+)$/.exec(location.hash);
  if (wanted) { sortByKey(decodeURIComponent(wanted[2]), wanted[1] ? -1 : 1); }
  else { sortByKey(table.getAttribute("data-default-sort"), 1); }
})();"""


def write_html_report(
    path: str | os.PathLike,
    items: Sequence[ReportItem],
    *,
    title: str = "Caption evaluation",
    scores: Mapping[str, float],
    notes: Sequence[str] = (),
    thumb_size: int = 128,
) -> Path:
    """Writes a self-contained HTML page of evaluated images, sortable by any column.

    Rows come worst first (lowest CIDEr; sorted by the page's script on load); clicking a column
    header sorts by it, clicking again reverses, and the address remembers the order
    (``report.html#sort=-Bleu_4``: BLEU-4 descending; keys as in ``data-key``). Thumbnails are embedded as base64 JPEGs; the
    thumbnail column is left out when no item has an image, and an image that cannot be read
    gets an empty cell (logged).

    Args:
        path: the ``.html`` file to write.
        items: one :class:`ReportItem` per image (e.g. from :func:`report_items`).
        title: page title and heading.
        scores: overall scores shown on top (e.g. ``ScoreReport.scores`` plus ``num_images``).
        notes: extra lines shown under the scores (skipped metrics, tokenizer).
        thumb_size: longer side of the thumbnails in pixels.

    Returns:
        The path written.
    """
    e = html.escape
    thumbs = any(item.image is not None for item in items)
    metrics = [k for k in REPORT_METRICS if any(k in item.scores for item in items)]
    default = "CIDEr" if "CIDEr" in metrics else (metrics[0] if metrics else "")
    head = ["<th>image</th>"] if thumbs else []
    head += [
        '<th data-key="file">file</th>',
        '<th data-key="caption">caption</th>',
        '<th data-key="references">references</th>',
    ]
    head += [f'<th data-key="{k}" data-type="num">{REPORT_METRICS[k]}</th>' for k in metrics]
    rows = []
    for item in items:
        cells = []
        if thumbs:
            img = _thumbnail(item.image, thumb_size) if item.image is not None else None
            cells.append(f"<td>{img or ''}</td>")
        refs = "".join(f"<li>{e(r)}</li>" for r in item.references)
        cells += [
            f'<td class="file" title="image id {item.image_id}">'
            f"{e(item.name or f'id {item.image_id}')}</td>",
            f'<td class="caption">{_caption_html(item)}</td>',
            f"<td><ul>{refs}</ul></td>",
        ]
        for k in metrics:
            v = item.scores.get(k, math.nan)
            cells.append(f'<td class="num" data-value="{v!r}">{_number(v)}</td>')
        rows.append(f'<tr data-image-id="{item.image_id}">{"".join(cells)}</tr>')
    # one small box per score, wrapping at the window's edge (a one-row table of 20 scores
    # was 2,000 px wide: the last ones off-screen)
    summary = "".join(f"<div><dt>{e(k)}</dt><dd>{_number(v)}</dd></div>" for k, v in scores.items())
    order = f", lowest {REPORT_METRICS[default]} first" if default else ""
    note_lines = "".join(f"<li>{e(n)}</li>" for n in notes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(title)}</h1>
<dl id="summary">{summary}</dl>
<ul id="notes">{note_lines}</ul>
<p>{len(items)} images{order}; click a column header to sort by it, again to reverse.</p>
<table id="captions" data-default-sort="{default}">
<thead><tr>{"".join(head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<script>{_JS}</script>
</body></html>
"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
