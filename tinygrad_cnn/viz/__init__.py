"""Learning tools: pictures of the graph, a trace of the backward pass, images.

* :func:`graph` -- the computation graph behind a tensor as Graphviz DOT
  (``.save("g.svg")``), with :class:`record_modules` to box each layer.
* :class:`trace` -- ``with trace() as t: loss.backward()``, then ``print(t)``.
* :mod:`~tinygrad_cnn.viz.images` -- first-layer filters and feature maps.
* :mod:`~tinygrad_cnn.viz.curves` -- loss/accuracy curves from a metrics file.
* :mod:`~tinygrad_cnn.viz.png` -- a dependency-free PNG writer and reader.

Matplotlib is used when installed and never required; Graphviz's ``dot``
is needed only to render graphs to SVG/PNG/PDF.
"""
from . import curves, images, png
from .curves import plot_curves
from .graph import Graph, GraphvizNotFoundError, graph, record_modules
from .images import feature_maps, filter_grid, save_feature_maps, save_filters
from .trace import Step, trace

__all__ = [
    "graph", "Graph", "GraphvizNotFoundError", "record_modules", "trace", "Step",
    "filter_grid", "save_filters", "feature_maps", "save_feature_maps", "plot_curves",
    "png", "images", "curves",
]
