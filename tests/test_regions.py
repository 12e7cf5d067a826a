"""Exact linear regions on 2-D slices, against independent oracles.

Oracles: shapely (tiling), the network itself evaluated at points (patterns read by forward
pre-hooks and ``F.unfold``, outputs), autograd Jacobians, the arrangement of lines in closed form
(one ReLU layer), and identities of the operation registry (a max-pool is the largest piece of
each window).
"""

from itertools import pairwise

import numpy as np
import pytest
import shapely
import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.data.loading import load_dataset
from nsp_pipeline.interpret import polygons
from nsp_pipeline.interpret.region_results import RegionPartition
from nsp_pipeline.interpret.regions import linear_regions
from nsp_pipeline.interpret.slices import Slice
from nsp_pipeline.model import ops
from nsp_pipeline.model.architectures import DigitsCNN
from nsp_pipeline.model.training import train_classifier

SIGN_MODULES = (nn.ReLU, nn.LeakyReLU)


# ---------------------------------------------------------------------------------------------
# Oracles


def kink_inputs(model, inputs, batch=20000):
    """Per kink module (by name, in call order): the input it receives, read by forward pre-hooks."""
    if len(inputs) > batch:
        parts = [kink_inputs(model, inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
        return {name: torch.cat([seen[name] for seen, _ in parts]) for name in parts[0][0]}, np.concatenate(
            [output for _, output in parts]
        )
    seen = {}
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args[0].detach()))
        for name, module in model.named_modules()
        if isinstance(module, (*SIGN_MODULES, nn.MaxPool2d))
    ]
    try:
        with torch.no_grad():
            output = model(torch.as_tensor(inputs, dtype=torch.float64))
    finally:
        for handle in handles:
            handle.remove()
    return seen, output.reshape(len(inputs), -1).numpy()


def oracle_patterns(model, inputs):
    """Sign bits of ReLU-like inputs and, per max-pool window, the index of its largest element."""
    seen, _ = kink_inputs(model, inputs)
    columns = []
    for name, value in seen.items():
        module = dict(model.named_modules())[name]
        if isinstance(module, nn.MaxPool2d):
            k = module.kernel_size
            windows = F.unfold(value, k, stride=module.stride)  # (n, C·k·k, L)
            windows = windows.reshape(len(value), value.shape[1], k * k, -1).transpose(2, 3)
            columns.append(windows.argmax(3).reshape(len(value), -1).numpy())
        else:
            columns.append((value.reshape(len(value), -1) > 0).numpy().astype(np.int64))
    return np.concatenate(columns, 1)


def interior_points(result, per_cell, rng):
    """Random points strictly inside each cell: convex combinations shrunk towards the vertex mean."""
    owner = polygons.owners(result.offsets)
    centre = polygons.vertex_means(result.vertices, result.offsets)
    weights = rng.dirichlet(np.ones(3), size=(result.n_cells, per_cell))
    points = []
    for i in range(result.n_cells):
        corner = result.vertices[owner == i]
        pick = corner[rng.integers(0, len(corner), size=(per_cell, 3))]
        points.append(0.5 * centre[i] + 0.5 * np.einsum("pk,pkd->pd", weights[i], pick))
    return np.concatenate(points), np.repeat(np.arange(result.n_cells), per_cell)


def cell_shapes(result):
    return [shapely.Polygon(result.vertices[a:b]) for a, b in pairwise(result.offsets)]


def check_tiling(result):
    shapes = cell_shapes(result)
    domain = shapely.Polygon(result.domain)
    assert all(shape.is_valid and shape.area > 0 for shape in shapes)
    assert np.all(result.areas > 0)  # counter-clockwise
    # Convex: every turn is to the left (or straight).
    start, end, owner = polygons.edges(result.vertices, result.offsets)
    edge = end - start
    following = edge[polygons.following(result.offsets)]
    turn = edge[:, 0] * following[:, 1] - edge[:, 1] * following[:, 0]
    assert np.all(turn >= -1e-12 * result.areas[owner])
    assert abs(result.areas.sum() - domain.area) <= 1e-12 * domain.area
    # Union = domain (snapped to a fine grid: GEOS's exact union can drop a cell of a large coverage
    # whose shared edges are split differently on either side, by rounding).
    grid = 1e-10 * np.abs(result.domain).max()
    union = shapely.union_all(shapes, grid_size=grid)
    assert union.symmetric_difference(domain).area <= 1e-7 * domain.area
    # Non-overlapping: every pair of cells that meet shares at most an edge.
    tree = shapely.STRtree(shapes)
    first, second = tree.query(shapes, predicate="intersects")
    shapes = np.asarray(shapes, dtype=object)
    overlap = shapely.area(
        shapely.intersection(shapes[first[first < second]], shapes[second[first < second]])
    )
    assert overlap.sum() <= 1e-9 * domain.area


def check_patterns(model, plane, result, rng, grid=120):
    stored = result.site_values().astype(np.int64)
    assert len(np.unique(stored, axis=0)) == result.n_cells  # no two cells share a pattern
    points, cell = interior_points(result, 4, rng)
    np.testing.assert_array_equal(oracle_patterns(model, plane.points(points)), stored[cell])
    # A grid: every point away from the edges has the pattern of the cell that holds it.
    low, high = result.domain.min(0), result.domain.max(0)
    xs, ys = np.meshgrid(np.linspace(low[0], high[0], grid), np.linspace(low[1], high[1], grid))
    coordinates = np.stack([xs.ravel(), ys.ravel()], 1)
    shapes = cell_shapes(result)
    tree = shapely.STRtree(shapes)
    point_index, cell_index = tree.query(shapely.points(coordinates), predicate="within")
    boundaries = shapely.boundary(np.asarray(shapes, dtype=object)[cell_index])
    away = shapely.distance(shapely.points(coordinates[point_index]), boundaries) > 1e-9
    point_index, cell_index = point_index[away], cell_index[away]
    assert len(point_index) > 0.9 * len(coordinates) * shapely.Polygon(result.domain).area / np.prod(
        high - low
    )
    patterns = oracle_patterns(model, plane.points(coordinates[point_index]))
    np.testing.assert_array_equal(patterns, stored[cell_index])


def check_affine_maps(model, plane, result, rng):
    points, cell = interior_points(result, 2, rng)
    _, outputs = kink_inputs(model, plane.points(points))
    predicted = np.einsum("nkd,nd->nk", result.affine_A[cell], points) + result.affine_c[cell]
    scale = np.abs(outputs).max()
    np.testing.assert_allclose(predicted, outputs, atol=1e-10 * scale, rtol=0)
    origin = torch.as_tensor(plane.origin)
    directions = torch.as_tensor(plane.directions)
    subset = rng.choice(len(points), size=min(40, len(points)), replace=False)
    for i in subset:
        jacobian = torch.autograd.functional.jacobian(
            lambda t: model((origin + torch.tensordot(t, directions, 1))[None]).reshape(-1),
            torch.as_tensor(points[i]),
        )
        np.testing.assert_allclose(result.affine_A[cell[i]], jacobian.numpy(), atol=1e-10 * scale, rtol=0)


def check_minimality(model, plane, result):
    """On every edge inside the domain some kink is exactly at its bend at the edge's midpoint."""
    start, end, _ = polygons.edges(result.vertices, result.offsets)
    middle = 0.5 * (start + end)
    domain_edge = shapely.LinearRing(result.domain)
    inside = shapely.distance(shapely.points(middle), domain_edge) > 1e-9
    seen, _ = kink_inputs(model, plane.points(middle[inside]))
    closest = np.full(inside.sum(), np.inf)
    modules = dict(model.named_modules())
    for name, value in seen.items():
        scale = value.abs().max().item()
        if isinstance(modules[name], nn.MaxPool2d):
            k = modules[name].kernel_size
            windows = F.unfold(value, k, stride=k).reshape(len(value), value.shape[1], k * k, -1)
            top = windows.topk(2, dim=2).values
            gap = (top[:, :, 0] - top[:, :, 1]).reshape(len(value), -1)
            # Two pieces that are both zero (after a ReLU) stay equal: their tie is not a bend.
            gap = torch.where(top[:, :, 0].reshape(len(value), -1) == 0, torch.inf, gap)
        else:
            gap = value.reshape(len(value), -1).abs()
        closest = np.minimum(closest, (gap.min(1).values / scale).numpy())
    assert np.all(closest < 1e-9)


def check_decision_boundary(model, plane, result, expected=True):
    ends = result.boundary_segments
    assert len(ends) > 0 or not expected
    if len(ends) == 0:
        assert len(np.unique(result.predicted)) == 1 and not result.touches_boundary.any()
        return
    points = np.concatenate([ends[:, 0], ends[:, 1], ends.mean(1)])
    _, logits = kink_inputs(model, plane.points(points))
    scale = np.abs(logits).max()
    classes = np.tile(result.boundary_classes, (3, 1))
    if result.n_outputs == 1:
        np.testing.assert_allclose(logits[:, 0], 0, atol=1e-9 * scale)
    else:
        top_two = np.sort(logits, 1)[:, -2:]
        np.testing.assert_allclose(top_two[:, 1] - top_two[:, 0], 0, atol=1e-9 * scale)
        pair = np.take_along_axis(logits, classes, 1)
        np.testing.assert_allclose(pair - top_two[:, 1:], 0, atol=1e-9 * scale)
    # Just off each segment's midpoint, on either side: the two classes.
    direction = ends[:, 1] - ends[:, 0]
    normal = np.stack([-direction[:, 1], direction[:, 0]], 1) / np.hypot(*direction.T)[:, None]
    step = 1e-7 * np.abs(result.domain).max()
    sides = []
    for sign in (1, -1):
        _, logits = kink_inputs(model, plane.points(ends.mean(1) + sign * step * normal))
        sides.append(logits.argmax(1) if result.n_outputs > 1 else (logits[:, 0] > 0).astype(int))
    assert np.all(np.sort(np.stack(sides, 1), 1) == result.boundary_classes)


def check_all(model, plane, result, seed=0, boundary=True):
    rng = np.random.default_rng(seed)
    model = model.double().eval()
    check_tiling(result)
    check_patterns(model, plane, result, rng)
    check_affine_maps(model, plane, result, rng)
    check_minimality(model, plane, result)
    check_decision_boundary(model, plane, result, boundary)


# ---------------------------------------------------------------------------------------------
# Networks


def random_mlp(seed, widths=(2, 16, 16, 5), activation=nn.ReLU, batch_norm=False):
    torch.manual_seed(seed)
    layers = []
    for width_in, width_out in pairwise(widths[:-1]):
        layers.append(nn.Linear(width_in, width_out))
        if batch_norm:
            norm = nn.BatchNorm1d(width_out)
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.normal_()
            layers.append(norm)
        layers.append(activation())
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers).double().eval()


class SmallCNN(nn.Module):
    """Conv (stride 2, padding), max-pool, a residual block, then a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.inner = nn.Conv2d(3, 3, 3, padding=1)
        self.relu2 = nn.LeakyReLU(0.1)
        self.head = nn.Linear(3 * 2 * 2, 4)

    def forward(self, x):
        x = self.pool(self.relu1(self.stem(x)))
        x = x + self.relu2(self.inner(x))
        return self.head(torch.flatten(x, 1))


def plane_through(rng, shape, margin=2.0):
    return Slice.through(rng.normal(size=(3, *shape)), margin=margin)


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize(
    ("activation", "batch_norm"),
    [(nn.ReLU, False), (lambda: nn.LeakyReLU(0.2), True)],
    ids=["relu", "leaky-bn"],
)
def test_random_mlp_partition_passes_every_oracle(activation, batch_norm):
    model = random_mlp(0, (6, 12, 12, 4), activation, batch_norm)
    plane = plane_through(np.random.default_rng(0), (6,))
    result = linear_regions(model, plane)
    assert result.layer_names == tuple(
        name for name, m in model.named_modules() if isinstance(m, SIGN_MODULES)
    )
    assert result.cells_after_layer[-1] == result.n_cells > 20
    check_all(model, plane, result)


def test_cnn_with_max_pool_and_residual_block_passes_every_oracle():
    torch.manual_seed(3)
    model = SmallCNN().double().eval()
    plane = plane_through(np.random.default_rng(1), (1, 8, 8))
    result = linear_regions(model, plane)
    assert result.layer_names == ("relu1", "pool", "relu2")
    assert list(result.layer_pieces) == [1, 4, 1]
    assert result.n_cells > 20
    check_all(model, plane, result)


def test_scalar_output_boundary_is_the_zero_level_set():
    model = random_mlp(4, (2, 10, 10, 1))
    plane = Slice(np.zeros(2), np.eye(2), np.array([[-3.0, -3.0], [3.0, -3.0], [3.0, 3.0], [-3.0, 3.0]]))
    result = linear_regions(model, plane, pair=None)
    assert result.n_outputs == 1
    check_all(model, plane, result)


@pytest.fixture(scope="module")
def trained_digits():
    train = load_dataset({"source": "digits", "split": "train"})
    torch.manual_seed(0)
    model = DigitsCNN()
    train_classifier(model, train, epochs=2, learning_rate=0.01, batch_size=64, seed=0)
    return model.eval(), load_dataset({"source": "digits", "split": "test"})


@pytest.mark.slow
def test_trained_digits_model_on_a_slice_through_three_test_digits(trained_digits):
    model, test = trained_digits
    picks = [int(np.flatnonzero(test.labels == label)[0]) for label in (0, 1, 7)]
    through = Slice.through(test.inputs[picks].numpy(), labels=["0", "1", "7"])
    # A small square around the first digit (the whole plane has ~10^5 cells: see the benchmark).
    half = 0.05 * np.abs(through.domain).max()
    square = through.anchors[0] + half * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    plane = Slice(through.origin, through.directions, square, through.anchors[:1], ["0"])
    result = linear_regions(model, plane, pair=(0, 1))
    assert result.layer_names == ("relu1", "pool1", "relu2", "pool2")
    assert np.all(np.diff(result.cells_after_layer) >= 0) and result.n_cells > 50
    # The anchor is predicted as the model predicts the digit.
    _, logits = kink_inputs(model.double(), plane.points(result.anchors))
    anchor_cell = polygons.distances(result.anchors[0], result.vertices, result.offsets).argmin()
    assert result.predicted[anchor_cell] == logits.argmax(1)[0]
    check_all(model, plane, result, boundary=False)


def test_linear_stacks_add_no_cells():
    torch.manual_seed(5)
    first, second, head = nn.Linear(3, 7), nn.Linear(7, 9), nn.Linear(9, 4)
    stacked = nn.Sequential(first, second, nn.ReLU(), head).double()
    merged_layer = nn.Linear(3, 9).double()
    with torch.no_grad():
        merged_layer.weight.copy_(second.weight.double() @ first.weight.double())
        merged_layer.bias.copy_(second.weight.double() @ first.bias.double() + second.bias.double())
    merged = nn.Sequential(merged_layer, nn.ReLU(), head).double()
    plane = plane_through(np.random.default_rng(2), (3,), margin=3.0)
    stacked_cells = linear_regions(stacked, plane).n_cells
    assert stacked_cells == linear_regions(merged, plane).n_cells
    assert linear_regions(nn.Sequential(first, second).double(), plane).n_cells == 1


def test_one_relu_layer_has_at_most_the_cells_of_an_arrangement_of_lines():
    """``m`` lines in general position meeting pairwise inside the domain make ``1 + m + m(m-1)/2`` cells."""
    rng = np.random.default_rng(7)
    m = 9
    layer = nn.Linear(2, m).double()
    with torch.no_grad():
        angles = np.pi * (np.arange(m) + rng.uniform(0.1, 0.9, m)) / m  # well separated directions
        layer.weight.copy_(torch.as_tensor(np.stack([np.cos(angles), np.sin(angles)], 1)))
        layer.bias.copy_(torch.as_tensor(rng.uniform(-1, 1, m)))
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(m, 3).double()).double()
    normals, levels = layer.weight.detach().numpy(), -layer.bias.detach().numpy()
    crossings = [np.linalg.solve(normals[[i, j]], levels[[i, j]]) for i in range(m) for j in range(i + 1, m)]
    reach = 2 * np.abs(crossings).max()
    big = Slice(
        np.zeros(2), np.eye(2), reach * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    )
    assert linear_regions(model, big).n_cells == 1 + m + m * (m - 1) // 2
    small = Slice(
        np.zeros(2), np.eye(2), 0.3 * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    )
    assert linear_regions(model, small).n_cells <= 1 + m + m * (m - 1) // 2


def test_operations_that_are_not_piecewise_linear_are_refused_by_name():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)
            self.act1 = nn.GELU()

        def forward(self, x):
            return self.act1(self.fc(x))

    class Squared(nn.Module):
        def forward(self, x):
            return x * x

    plane = Slice(np.zeros(2), np.eye(2), np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'act1' \(GELU\) is not piecewise linear"):
        linear_regions(Gated(), plane)
    with pytest.raises(UnsupportedLayerError, match=r"'mul'.*two tensors that both depend on the input"):
        linear_regions(Squared(), plane)


def test_box_constraints_clip_the_domain():
    model = random_mlp(6, (4, 8, 3))
    points = np.random.default_rng(3).uniform(0.3, 0.7, size=(3, 4))
    plane = Slice.through(points, margin=4.0, lo=0.0, hi=1.0)
    result = linear_regions(model, plane)
    np.testing.assert_allclose(result.areas.sum(), shapely.Polygon(plane.region).area, rtol=1e-12)
    inputs = plane.points(result.vertices)
    assert inputs.min() >= -1e-9 and inputs.max() <= 1 + 1e-9


def test_registry_kinks_reproduce_max_pools_and_say_which_operations_are_piecewise_linear():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 7, generator=rng, dtype=torch.float64)
    calls = [
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (x,), {}),
        (nn.MaxPool2d((2, 3), stride=(1, 2), dilation=(2, 1)), (x,), {}),
        (F.max_pool2d, (x, 2), {"ceil_mode": True}),
        (nn.AdaptiveMaxPool2d((4, 3)), (x,), {}),
        (F.max_pool1d, (x[:, :, 0], 3), {"stride": 2, "padding": 1}),
    ]
    for target, args, kwargs in calls:
        sites = ops.lookup(target).kinks(target, args, kwargs, lambda value: value is x)
        expected = target(*args, **kwargs)
        np.testing.assert_array_equal(
            sites.max(2).values.numpy(), expected.reshape(2, -1).numpy(), err_msg=str(target)
        )
    hardtanh = ops.lookup(nn.Hardtanh(-2.0, 0.5)).kinks(nn.Hardtanh(-2.0, 0.5), (x,), {}, lambda v: True)
    np.testing.assert_array_equal(hardtanh[:, 1::2, 0].numpy(), (x - 0.5).reshape(2, -1).numpy())
    piecewise = {
        nn.ReLU,
        nn.LeakyReLU,
        nn.Linear,
        nn.Conv2d,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.BatchNorm2d,
        nn.Flatten,
    }
    for module in piecewise:
        assert ops.lookup(module.__new__(module)).kinks is not None, module
    for module in (nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.ELU, nn.SiLU):
        assert ops.lookup(module.__new__(module)).kinks is None, module


def test_partition_round_trips_and_local_complexity_counts_cells_near_each_anchor():
    model = random_mlp(8, (5, 10, 10, 3))
    plane = plane_through(np.random.default_rng(4), (5,))
    result = linear_regions(model, plane, pair=(0, 2))
    again = RegionPartition.from_dict(result.to_dict())
    for name, value in result.to_arrays().items():
        np.testing.assert_array_equal(getattr(again, name), value, err_msg=name)
    assert again.layer_names == result.layer_names and again.pair == (0, 2)
    radius = 0.3 * np.abs(result.domain).max()
    shapes = cell_shapes(result)
    expected = [
        sum(shape.distance(shapely.Point(anchor)) <= radius for shape in shapes) / (np.pi * radius**2)
        for anchor in result.anchors
    ]
    np.testing.assert_allclose(result.local_complexity(radius), expected)
    # The pair's tie: the two outputs are equal along every segment (the model as oracle).
    _, logits = kink_inputs(model, plane.points(result.pair_segments.reshape(-1, 2)))
    np.testing.assert_allclose(logits[:, 0], logits[:, 2], atol=1e-9 * np.abs(logits).max())
    cell = result.cell(0)
    assert cell["area"] == result.areas[0] and cell["pattern"].shape == (20,)
