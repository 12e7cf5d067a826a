"""Pictures of linear regions, drawn from stand-in partitions built here (not by the partition code).

Oracles: an arrangement of lines in a square cut by shapely (cells, their areas, which cells meet a
window), colours written out in closed form from the colormap (linear and log scales), the counts of
cells created per layer by hand, byte comparison of two drawings, and a fresh interpreter for the
torch-free import.
"""

import subprocess
import sys
import time
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.polygon import orient
from shapely.ops import split

from nsp_pipeline.render import region_plots
from nsp_pipeline.render.region_plots import (
    plot_cells_per_layer,
    plot_partition,
    save_figure,
    write_region_pdf,
)


class StandIn(SimpleNamespace):
    """The attributes of a ``RegionPartition`` that the pictures read; local complexity by shapely."""

    def local_complexity(self, radius):
        cells = [
            Polygon(self.vertices[a:b]) for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)
        ]
        disks = [Point(anchor).buffer(radius, 256) for anchor in self.anchors]
        return np.array([sum(cell.intersects(disk) for cell in cells) / disk.area for disk in disks])


def from_polygons(polygons, predicted, slope, domain, anchors, boundary, pair_segments=None):
    vertices = [np.asarray(orient(p, 1.0).exterior.coords)[:-1] for p in polygons]
    rng = np.random.default_rng(1)
    n = len(polygons)
    return StandIn(
        vertices=np.concatenate(vertices),
        offsets=np.concatenate([[0], np.cumsum([len(v) for v in vertices])]).astype(np.int64),
        affine_A=rng.normal(size=(n, 3, 2)),
        affine_c=rng.normal(size=(n, 3)),
        areas=np.array([p.area for p in polygons]),
        slope_norm=np.asarray(slope, dtype=np.float64),
        predicted=np.asarray(predicted, dtype=np.int64),
        touches_boundary=np.zeros(n, dtype=bool),
        layer_names=["fc1", "relu1", "fc2"],
        cells_after_layer=np.array([1, n - 3, n]),
        boundary_segments=np.asarray(boundary, dtype=np.float64).reshape(-1, 2, 2),
        boundary_classes=np.tile([0, 1], (len(boundary), 1)),
        pair=None if pair_segments is None else (0, 2),
        pair_segments=None if pair_segments is None else np.asarray(pair_segments, dtype=np.float64),
        domain=np.asarray(domain, dtype=np.float64),
        anchors=np.asarray(anchors, dtype=np.float64),
        anchor_labels=[f"digit {k}" for k in range(len(anchors))],
    )


def arrangement():
    """Cells of 5 lines in [−1, 1]², cut by shapely; the class is the sign pattern of two of the lines."""
    square = box(-1.0, -1.0, 1.0, 1.0)
    lines = [((-1.2, -0.9), (1.2, 0.7)), ((-0.3, -1.2), (0.4, 1.2)), ((-1.2, 0.5), (1.2, 0.2))]
    lines += [((-1.2, 1.1), (0.9, -1.2)), ((0.1, -1.2), (1.2, 0.3))]
    cells = [square]
    for line in lines:
        cells = [piece for cell in cells for piece in split(cell, LineString(line)).geoms]
    centroids = np.array([c.centroid.coords[0] for c in cells])
    predicted = (centroids[:, 0] > 0).astype(int) + 2 * (centroids[:, 1] > 0.35)
    slope = 1.0 + np.arange(len(cells)) % 7  # range 1..7: a linear scale
    anchors = [(-0.5, -0.5), (0.5, -0.4), (0.0, 0.6)]
    boundary = [square.intersection(LineString(line)).coords for line in lines]
    pair = [((-1.0, 0.35), (1.0, 0.35))]
    return cells, from_polygons(cells, predicted, slope, square.exterior.coords[:-1], anchors, boundary, pair)


def grid(side):
    """``side²`` unit squares scaled into [0, 1]²; slope norms over 6 decades, one of them 0."""
    corner = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    square = np.array([(0, 0), (1, 0), (1, 1), (0, 1)])
    vertices = ((corner[:, None, :] + square[None]) / side).reshape(-1, 2)
    n = side * side
    centres = (corner + 0.5) / side
    slope = 10.0 ** (6 * centres[:, 0] - 3)
    slope[0] = 0.0
    angle = np.linspace(0, 2 * np.pi, 2001)
    circle = 0.5 + 0.3 * np.stack([np.cos(angle), np.sin(angle)], -1)
    return StandIn(
        vertices=vertices,
        offsets=np.arange(0, 4 * n + 1, 4),
        slope_norm=slope,
        predicted=(np.hypot(*(centres - 0.5).T) < 0.3).astype(np.int64),
        layer_names=["fc1", "fc2"],
        cells_after_layer=np.array([side, n]),
        boundary_segments=np.stack([circle[:-1], circle[1:]], 1),
        boundary_classes=np.tile([0, 1], (2000, 1)),
        pair=None,
        pair_segments=None,
        domain=np.array([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]),
        anchors=np.array([(0.2, 0.2), (0.8, 0.5)]),
        anchor_labels=["a", "b"],
        local_complexity=lambda radius: np.array([n, n], dtype=float),
    )


def found(fig, gid):
    return [artist for artist in fig.findobj() if artist.get_gid() == gid]


def test_cells_boundary_and_slope_colours():
    cells, partition = arrangement()
    fig = plot_partition(partition, color_by="slope")
    fig.draw_without_rendering()
    (collection,) = found(fig, region_plots.CELLS)
    paths = collection.get_paths()
    assert len(paths) == len(cells)
    for path, cell in zip(paths, cells, strict=True):
        assert Polygon(path.vertices).symmetric_difference(cell).area < 1e-12
    slope = partition.slope_norm
    expected = matplotlib.colormaps["viridis"]((slope - slope.min()) / (slope.max() - slope.min()))
    np.testing.assert_allclose(collection.get_facecolor(), expected)
    (boundary,) = found(fig, region_plots.BOUNDARY)
    np.testing.assert_array_equal(np.array(boundary.get_segments()), partition.boundary_segments)
    (tie,) = found(fig, region_plots.PAIR)
    np.testing.assert_array_equal(np.array(tie.get_segments()), partition.pair_segments)
    assert len(found(fig, region_plots.HALO)) == 2
    (outline,) = found(fig, region_plots.DOMAIN)
    assert Polygon(outline.get_xy()).equals(box(-1, -1, 1, 1))
    assert not found(fig, region_plots.INSET) and not found(fig, region_plots.THUMBNAIL)
    fig = plot_partition(partition, boundary=False, pair=False)
    assert not found(fig, region_plots.BOUNDARY) and not found(fig, region_plots.PAIR)
    given = matplotlib.figure.Figure().add_subplot()
    assert plot_partition(partition, ax=given) is given.figure
    assert len([c for c in given.collections if c.get_gid() == region_plots.CELLS]) == 1


def test_log_scale_colours_and_zero_slope():
    partition = grid(20)
    fig = plot_partition(partition, color_by="slope")
    fig.draw_without_rendering()
    (collection,) = found(fig, region_plots.CELLS)
    colours = collection.get_facecolor()
    slope = partition.slope_norm
    positive = slope > 0
    low, high = slope[positive].min(), slope[positive].max()
    position = (np.log10(slope[positive]) - np.log10(low)) / (np.log10(high) - np.log10(low))
    np.testing.assert_allclose(colours[positive], matplotlib.colormaps["viridis"](position), atol=1e-12)
    np.testing.assert_allclose(
        colours[~positive], [matplotlib.colors.to_rgba(region_plots.ZERO_SLOPE_COLOUR)]
    )
    labels = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    assert "slope norm ‖A‖ of the cell's affine map (log scale); grey: ‖A‖ = 0 in 1 cell(s)" in labels


def test_class_colours_legend_and_title():
    cells, partition = arrangement()
    names = ["zero", "one", "two", "three"]
    fig = plot_partition(partition, color_by="class", class_names=names)
    (collection,) = found(fig, region_plots.CELLS)
    colours = collection.get_facecolor()
    predicted = partition.predicted
    for k in np.unique(predicted):
        assert (colours[predicted == k] == colours[predicted == k][0]).all()
    assert len({tuple(colours[predicted == k][0]) for k in np.unique(predicted)}) == len(np.unique(predicted))
    (ax,) = [ax for ax in fig.axes if ax.get_legend()]
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == [f"predicted {names[k]}" for k in np.unique(predicted)] + [
        "decision boundary",
        "tie zero = two",
    ]
    for k, patch in zip(np.unique(predicted), legend.get_patches(), strict=False):
        np.testing.assert_allclose(patch.get_facecolor(), colours[predicted == k][0])
    area = box(-1, -1, 1, 1).area
    radius = 0.2
    near = partition.local_complexity(radius)
    fig = plot_partition(partition, color_by="class", complexity_radius=radius, title="slice 3")
    title = fig.axes[0].get_title(loc="left")
    assert title.startswith(f"slice 3: {len(cells)} linear regions; domain area {area:.4g}; ")
    assert ", ".join(f"digit {k}: {v:.4g}" for k, v in enumerate(near)) in title


def test_anchors_thumbnails_and_inset():
    cells, partition = arrangement()
    rng = np.random.default_rng(0)
    thumbnails = [rng.random((8, 8)), rng.random((1, 8, 8)), rng.random((3, 6, 5))]
    window = (-0.3, 0.2, -0.2, 0.3)
    fig = plot_partition(partition, thumbnails=thumbnails, inset=window)
    (markers,) = found(fig, region_plots.ANCHORS)
    np.testing.assert_array_equal(markers.get_offsets(), partition.anchors)
    assert len(found(fig, region_plots.THUMBNAIL)) == 3
    (inset,) = found(fig, region_plots.INSET)
    assert inset.get_xlim() == window[:2] and inset.get_ylim() == window[2:]
    (zoomed,) = [c for c in inset.collections if c.get_gid() == region_plots.CELLS]
    drawn = {shapely.normalize(Polygon(p.vertices)).wkt for p in zoomed.get_paths()}
    meeting = {
        shapely.normalize(orient(c, 1.0)).wkt for c in cells if c.intersects(box(-0.3, -0.2, 0.2, 0.3))
    }
    assert meeting <= drawn and len(drawn) < len(cells)


def test_cells_per_layer_bars():
    _, partition = arrangement()
    partition.layer_names, partition.cells_after_layer = ["fc1", "relu1", "fc2", "relu2"], [4, 10, 10, 25]
    fig = plot_cells_per_layer(partition)
    bars = found(fig, region_plots.LAYER_BARS)
    assert [bar.get_height() for bar in bars] == [3, 6, 0, 15]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["fc1", "relu1", "fc2", "relu2"]


def test_bad_input_raises():
    _, partition = arrangement()
    with pytest.raises(ValueError, match=r"color_by='layer': expected one of \('slope', 'class'\)"):
        plot_partition(partition, color_by="layer")
    with pytest.raises(ValueError, match=r"3 class names given but the partition has classes 0\.\.3"):
        plot_partition(partition, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"2 thumbnails given for 3 anchors"):
        plot_partition(partition, thumbnails=[np.zeros((4, 4))] * 2)
    with pytest.raises(ValueError, match=r"a thumbnail of shape \(2, 4, 4\)"):
        plot_partition(partition, thumbnails=[np.zeros((2, 4, 4))] * 3)
    with pytest.raises(ValueError, match=r"inset \(1, 0, 0, 1\): expected \(x0, x1, y0, y1\) with x0 < x1"):
        plot_partition(partition, inset=(1, 0, 0, 1))
    partition.cells_after_layer = [4, 3, 25]
    with pytest.raises(ValueError, match=r"decreases \(at layer 'relu1'\)"):
        plot_cells_per_layer(partition)
    partition.predicted = partition.predicted[1:]
    with pytest.raises(ValueError, match=r"predicted has 12 values for 13 cells: expected one per cell"):
        plot_partition(partition)
    partition.offsets = partition.offsets[:-1]
    with pytest.raises(ValueError, match=r"do not split .* vertices"):
        plot_partition(partition)


def test_same_bytes_pdf_svg(tmp_path):
    _, partition = arrangement()
    options = {"thumbnails": [np.eye(4)] * 3, "inset": (-0.3, 0.2, -0.2, 0.3), "class_names": list("abcd")}
    for suffix in ("pdf", "svg"):
        first, second = tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}"
        save_figure(plot_partition(partition, **options), first)
        save_figure(plot_partition(partition, **options), second)
        assert first.read_bytes() == second.read_bytes()
    first, second = tmp_path / "a.pdf", tmp_path / "b.pdf"
    write_region_pdf(first, partition, title="slice", **options)
    write_region_pdf(second, partition, title="slice", **options)
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert data.count(b"/Type /Page") - data.count(b"/Type /Pages") == 3
    with pytest.raises(ValueError, match=r"cannot save a figure as 'a\.eps'"):
        save_figure(plot_partition(partition), tmp_path / "a.eps")


@pytest.mark.slow
def test_hundred_thousand_cells(tmp_path):
    partition = grid(317)
    assert len(partition.offsets) - 1 == 100_489
    for suffix in ("pdf", "svg"):
        path = tmp_path / f"cells.{suffix}"
        start = time.perf_counter()
        fig = plot_partition(partition, color_by="slope", inset=(0.4, 0.5, 0.4, 0.5))
        drawn = time.perf_counter()
        save_figure(fig, path)
        done = time.perf_counter()
        (collection,) = [c for c in fig.axes[0].collections if c.get_gid() == region_plots.CELLS]
        assert len(collection.get_paths()) == 100_489
        np.testing.assert_array_equal(collection.get_edgecolor(), collection.get_facecolor())  # seams only
        print(
            f"\n100,489 cells to {suffix}: build {drawn - start:.2f} s, save {done - drawn:.2f} s, "
            f"{path.stat().st_size / 1e6:.1f} MB"
        )


def test_torch_free_import():
    code = "import sys, nsp_pipeline.render.region_plots; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
