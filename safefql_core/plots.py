"""What every map plot does last: the legend beside the axes, the title, the file. Free of
torch and ROS, so the episode monitor's live map can share it."""
from __future__ import annotations

from typing import Any


def save_map(fig: Any, ax: Any, keys: list, title: str, path: str) -> None:
    """Legend (the axes' labelled patches, then `keys`) outside the map on the right, so it
    never hides a path; title; a 130-dpi PNG at `path`; the figure closed."""
    import matplotlib.pyplot as plt

    ax.legend(handles=ax.get_legend_handles_labels()[0] + keys, fontsize=7, loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
