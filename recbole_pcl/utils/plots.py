"""Figures drawn on their own ``matplotlib.figure.Figure``: no pyplot, no backend switched, so a
notebook keeps its inline plots after a run."""

from recbole_pcl.utils.checkpoint import atomic_path


def new_figure(width, height, columns=1):
    """A figure of ``width`` x ``height`` inches and its row of ``columns`` axes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def save_figure(figure, path, dpi=110):
    """Write ``figure`` as PNG to ``path`` atomically."""
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
