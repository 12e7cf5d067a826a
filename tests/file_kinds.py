"""One small file of each kind written by the graph-view and interpret stages, for storage tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from nsp_pipeline.analysis.graph_summary import summarize_graph
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.interpret.minimal_images import masked_image, minimal_parcel_image
from nsp_pipeline.interpret.regions import linear_regions
from nsp_pipeline.interpret.results import AttributionMaps
from nsp_pipeline.interpret.slices import Slice
from nsp_pipeline.interpret.synthesis import synthesize
from nsp_pipeline.interpret.targets import Target
from nsp_pipeline.io import hdf5


def write_analysis_kinds(
    paths: Mapping[str, Path], graph: NeuronGraph, provenance: Mapping[str, str]
) -> None:
    """Write a ``graph_summary``, ``attribution_maps``, ``minimal_images``, ``synthesis`` and
    ``regions`` file."""
    weighted = graph.with_weights(np.linspace(-1.0, 1.0, graph.n_edges), "structural")
    summary = summarize_graph(weighted, {"analytics": ["katz", "paths"], "blocks": [[0, 1]]})
    hdf5.write_graph_summary(paths["graph_summary"], summary, provenance)
    maps = AttributionMaps(
        inputs=np.zeros((2, 1, 3, 3)),
        targets=[{"layer": "conv", "channel": 1, "reduction": "mean"}],
        values=np.array([[0.5], [1.5]]),
        maps={"saliency": np.ones((2, 1, 1, 3, 3))},
        parameters={"saliency": {"abs": False}},
        rf_boxes=np.array([[[0, 1], [0, 3], [0, 3]]]),
        sample_ids=np.array([7, 9]),
    )
    hdf5.write_attribution_maps(paths["attribution_maps"], maps, provenance)
    torch.manual_seed(0)
    layers = (torch.nn.Conv2d(1, 2, 2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32, 3))
    net = torch.nn.Sequential(*layers).eval()
    unit, image = [Target("3", unit=(1,))], torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(0))
    (parcels,) = minimal_parcel_image(net, image, unit, segmentation_kwargs={"n_segments": 3})
    (masked,) = masked_image(net, image, unit)
    hdf5.write_minimal_images(paths["minimal_images"], [(4, parcels), (4, masked)], provenance)
    hdf5.write_synthesis(paths["synthesis"], synthesize(net, unit, (1, 5, 5), steps=2), provenance)
    plane = Slice.through(np.stack([image.numpy(), np.eye(5)[None], np.ones((1, 5, 5))]).astype(np.float64))
    hdf5.write_regions(paths["regions"], linear_regions(net, plane, pair=(0, 1)), provenance)
