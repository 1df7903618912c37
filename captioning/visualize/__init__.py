"""Pictures of what a captioning model does: attention maps and an HTML report of its captions.

* :func:`save_attention_map` (:mod:`captioning.visualize.attention`): the image and one panel
  per generated word with its attention weights overlaid, as in the Show-Attend-and-Tell paper.
* :func:`write_html_report` (:mod:`captioning.visualize.html_report`): a self-contained, sortable HTML
  page of evaluated images with thumbnails, captions, references and per-image scores.
* :func:`plot_training_curves` (:mod:`captioning.visualize.curves`): train loss and validation
  metrics per epoch from a run's ``metrics.csv``, the learning rate, the best epoch marked.
"""

from captioning.visualize.attention import (
    COLORMAP,
    ImageSource,
    attention_colormap,
    attention_figure,
    attention_grids,
    attention_steps,
    model_view,
    region_maps,
    save_attention_map,
    upsample_attention,
)
from captioning.visualize.curves import plot_training_curves, training_curves_figure
from captioning.visualize.html_report import (
    REPORT_METRICS,
    ReportItem,
    report_items,
    write_html_report,
)

__all__ = [
    "COLORMAP",
    "REPORT_METRICS",
    "ImageSource",
    "ReportItem",
    "attention_colormap",
    "attention_figure",
    "attention_grids",
    "attention_steps",
    "model_view",
    "plot_training_curves",
    "region_maps",
    "report_items",
    "save_attention_map",
    "training_curves_figure",
    "upsample_attention",
    "write_html_report",
]
