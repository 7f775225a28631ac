"""DARTS (nas/ and the darts plugin): hypergradient, optimiser separation, genotypes, shapes, seeding, settings, e2e.

Every network here is tiny so the file runs in seconds on two cores.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
from conftest import katibx_cli  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from katibx.algorithms.darts import Darts  # noqa: E402
from katibx.loader import experiment_from_dict  # noqa: E402
from katibx.nas.architect import Architect  # noqa: E402
from katibx.nas.data import DataError, Dataset, load_cifar10, load_digits  # noqa: E402
from katibx.nas.evaluate import all_skip_genotype, evaluate  # noqa: E402
from katibx.nas.genotype import Genotype, derive_genotype, plot_genotype  # noqa: E402
from katibx.nas.model_eval import EvalNetwork  # noqa: E402
from katibx.nas.model_search import SearchNetwork, num_edges  # noqa: E402
from katibx.nas.run_trial import parse_trial_args  # noqa: E402
from katibx.nas.search_space import reduction_layers  # noqa: E402
from katibx.nas.settings import KATIB_DEFAULTS, parse_settings  # noqa: E402
from katibx.nas.trainer import search  # noqa: E402
from katibx.search_space import SearchSpace  # noqa: E402
from katibx.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KATIB_NAS = REPO / "tests" / "data" / "katib-examples" / "nas"
SMOOTH_OPS = ["separable_convolution_3x3", "avg_pooling_3x3", "skip_connection"]
ALL_OPS = ["separable_convolution_3x3", "dilated_convolution_3x3", "avg_pooling_3x3", "max_pooling_3x3", "skip_connection"]

torch.set_num_threads(1)


def smooth(model: nn.Module) -> nn.Module:
    """Swap every ReLU for Softplus so finite differences see a smooth function."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus(beta=2.0))
    return model


def tiny_net(ops: list[str] = SMOOTH_OPS, layers: int = 2, nodes: int = 2, channels: int = 2) -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(ops, layers, init_channels=channels, num_classes=3, num_nodes=nodes, stem_multiplier=1, in_channels=1)


def batch(seed: int, n: int = 8, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def exact_hypergradient(model: SearchNetwork, train: tuple, val: tuple, xi: float, wd: float,
                        momentum_term: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """d/dalpha L_val(w - xi (m + dL_train/dw + wd w), alpha) by double backward."""
    names = [n for n, _ in model.named_weights()]
    weights = [p.detach().requires_grad_() for p in model.weights()]
    alphas = model.arch_parameters()

    def loss(ws: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {**dict(zip(names, ws)), "alpha_normal": model.alpha_normal, "alpha_reduce": model.alpha_reduce}
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    grads = torch.autograd.grad(loss(weights, *train), weights, create_graph=True)
    extra = momentum_term or [torch.zeros_like(w) for w in weights]
    unrolled = [w - xi * (g + wd * w + m) for w, g, m in zip(weights, grads, extra)]
    return list(torch.autograd.grad(loss(unrolled, *val), alphas))


def rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    diff = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))
    return float(diff / torch.sqrt(sum((y ** 2).sum() for y in b)))


def test_second_order_hypergradient_matches_double_backward_in_float64() -> None:
    # The paper's eps = 0.01 / ||v||: the central difference is exact up to O(eps^2) third-derivative terms,
    # small for a smooth net of 4 channels (a 2-channel net is curved enough to reach ~1e-3).
    model = smooth(tiny_net(layers=3, channels=4)).double()
    with torch.no_grad():  # alphas away from uniform so every term is exercised
        for alpha in model.arch_parameters():
            alpha.normal_(0, 0.5)
    train, val = batch(1, n=32, dtype=torch.float64), batch(2, n=32, dtype=torch.float64)
    xi, wd = 0.025, 3e-4
    architect = Architect(model, lr=3e-3, weight_decay=1e-3, order="second", w_weight_decay=wd)
    second = architect.hypergradient(*train, *val, xi=xi)
    exact = exact_hypergradient(model, train, val, xi, wd)
    assert rel_err(second, exact) <= 1e-4
    first = Architect(model, lr=3e-3, weight_decay=1e-3, order="first").hypergradient(*train, *val, xi=xi)
    assert rel_err(first, exact) > 2e-2  # the Hessian term matters here, so dropping it would be caught

    # With momentum: the virtual step includes momentum * buffer, as the real SGD step would.
    w_opt = torch.optim.SGD(model.weights(), lr=xi, momentum=0.9, weight_decay=wd)
    nn.functional.cross_entropy(model(train[0]), train[1]).backward(inputs=model.weights())
    w_opt.step()
    buffers = [0.9 * w_opt.state[p]["momentum_buffer"] for p in model.weights()]
    architect = Architect(model, lr=3e-3, weight_decay=1e-3, order="second", w_momentum=0.9, w_weight_decay=wd)
    with_momentum = architect.hypergradient(*train, *val, xi=xi, w_optimizer=w_opt)
    assert rel_err(with_momentum, exact_hypergradient(model, train, val, xi, wd, buffers)) <= 1e-4


@pytest.mark.parametrize("order", ["first", "second"])
def test_alphas_move_only_through_their_own_optimiser_on_validation_data(order: str) -> None:
    model = tiny_net(ALL_OPS)
    weights, alphas = model.weights(), model.arch_parameters()
    assert not {id(p) for p in weights} & {id(a) for a in alphas}
    assert {id(p) for p in weights} | {id(a) for a in alphas} == {id(p) for p in model.parameters()} - (
        set() if model.reductions else {id(model.alpha_reduce)})
    w_opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9)
    architect = Architect(model, lr=0.01, weight_decay=1e-3, order=order)
    assert not {id(p) for group in w_opt.param_groups for p in group["params"]} & {id(a) for a in alphas}
    assert not {id(p) for group in architect.optimizer.param_groups for p in group["params"]} & {id(p) for p in weights}

    train, val = batch(1), batch(2)
    alpha_before = [a.detach().clone() for a in alphas]
    weights_before = [p.detach().clone() for p in weights]
    architect.step(*train, *val, xi=0.1, w_optimizer=w_opt)
    assert all(torch.equal(p, b) for p, b in zip(weights, weights_before))  # bitwise: copies, no +/- drift
    assert all(p.grad is None for p in weights)
    assert any(not torch.equal(a, b) for a, b in zip(alphas, alpha_before))

    alpha_after = [a.detach().clone() for a in alphas]
    w_opt.zero_grad()
    nn.functional.cross_entropy(model(train[0]), train[1]).backward(inputs=weights)
    w_opt.step()
    assert all(a.grad is None for a in alphas)
    assert all(torch.equal(a, b) for a, b in zip(alphas, alpha_after))
    assert any(not torch.equal(p, b) for p, b in zip(weights, weights_before))


def test_first_order_is_plain_alternating_gradient_descent() -> None:
    model = tiny_net(ALL_OPS)
    train, val = batch(1), batch(2)
    architect = Architect(model, lr=0.5, weight_decay=0.0, order="first")
    architect.optimizer = torch.optim.SGD(architect.alphas, lr=0.5)  # plain GD to compare the update exactly
    expected_grad = torch.autograd.grad(nn.functional.cross_entropy(model(val[0]), val[1]), architect.alphas)
    before = [a.detach().clone() for a in architect.alphas]
    architect.step(*train, *val, xi=0.1)  # xi and the training batch play no part in first order
    for a, b, g in zip(architect.alphas, before, expected_grad):
        torch.testing.assert_close(a.detach(), b - 0.5 * g, rtol=0, atol=1e-7)


def _brute_force_cell(weights: np.ndarray, primitives: list[str], nodes: int) -> list[list[tuple[str, int]]]:
    out, offset = [], 0
    for node in range(nodes):
        scored = []
        for j in range(node + 2):
            row = weights[offset + j].copy()
            row[primitives.index("none")] = -np.inf
            scored.append((row.max(), -j, primitives[int(row.argmax())]))
        scored.sort(reverse=True)
        out.append([(op, -nj) for _, nj, op in scored[:2]])
        offset += node + 2
    return out


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_genotype_never_picks_none_and_takes_two_distinct_inputs(nodes: int) -> None:
    primitives = ALL_OPS + ["none"]
    rng = np.random.default_rng(nodes)
    for _ in range(200):
        logits = rng.normal(size=(num_edges(nodes), len(primitives)))
        logits[:, -1] += rng.uniform(0, 4)  # none often the strongest
        w = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        genotype = derive_genotype(w.tolist(), w.tolist(), primitives, nodes)
        for cell in (genotype.normal, genotype.reduce):
            assert len(cell) == nodes
            for i, node in enumerate(cell):
                inputs = [j for _, j in node]
                assert len(node) == 2 and len(set(inputs)) == 2 and all(0 <= j < i + 2 for j in inputs)
                assert all(op != "none" for op, _ in node)
        assert genotype.normal == _brute_force_cell(w, primitives, nodes)
        assert genotype.normal_concat == list(range(2, 2 + nodes))


def test_skip_cap_replaces_the_weakest_skip_connections() -> None:
    primitives = ["separable_convolution_3x3", "skip_connection", "none"]
    w = [[0.1, 0.8, 0.1] for _ in range(num_edges(4))]
    w[0] = [0.1, 0.85, 0.05]
    w[1] = [0.1, 0.9, 0.0]
    uncapped = derive_genotype(w, None, primitives, 4)
    assert uncapped.count("skip_connection") == 8
    capped = derive_genotype(w, None, primitives, 4, max_skip=2)
    assert capped.count("skip_connection") == 2
    assert sorted(capped.normal[0]) == [("skip_connection", 0), ("skip_connection", 1)]  # the two strongest kept
    assert capped.reduce == [] and capped.reduce_concat == []


def test_genotype_string_json_and_katib_forms_round_trip(tmp_path: Path) -> None:
    genotype = Genotype([[("separable_convolution_3x3", 0), ("skip_connection", 1)], [("avg_pooling_3x3", 2), ("max_pooling_3x3", 0)]],
                        [2, 3], [[("max_pooling_3x3", 0), ("max_pooling_3x3", 1)], [("skip_connection", 2), ("max_pooling_3x3", 1)]], [2, 3])
    text = str(genotype)
    assert " " not in text and text.startswith("Genotype(normal=[[('separable_convolution_3x3',0),")
    assert Genotype.parse(text) == genotype
    assert Genotype.parse(json.dumps(genotype.to_dict())) == genotype
    flat = ("Genotype(normal=[('separable_convolution_3x3', 0), ('skip_connection', 1), ('avg_pooling_3x3', 2), "
            "('max_pooling_3x3', 0)], normal_concat=range(2, 4), reduce=[('max_pooling_3x3', 0), ('max_pooling_3x3', 1), "
            "('skip_connection', 2), ('max_pooling_3x3', 1)], reduce_concat=range(2, 4))")
    assert Genotype.parse(flat) == genotype
    genotype.save_json(tmp_path / "g.json")
    assert Genotype.from_dict(json.loads((tmp_path / "g.json").read_text())) == genotype
    assert plot_genotype(genotype, tmp_path / "g.png") == tmp_path / "g.png" and (tmp_path / "g.png").stat().st_size > 1000
    for bad, message in [("Genotype(normal=[[('none',0),('skip_connection',1)]])", "'none' cannot be an edge"),
                         ("Genotype(normal=[[('skip_connection',3),('skip_connection',1)]])", "input 3 does not exist"),
                         ("Genotype(normal=[[('conv_9',0),('skip_connection',1)]])", "unknown operation 'conv_9'"),
                         ("rm -rf /", "expected Genotype(")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            Genotype.parse(bad)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_shapes_through_normal_and_reduction_cells(layers: int) -> None:
    model = tiny_net(ALL_OPS, layers=layers, nodes=3)
    assert model.reductions == {1: [], 2: [1], 3: [1, 2]}[layers] == reduction_layers(layers)
    x = torch.randn(4, 1, 8, 8)
    sizes = []
    s0 = s1 = model.stem(x)
    weights = torch.softmax(model.alpha_normal, -1)
    for cell in model.cells:
        s0, s1 = s1, cell(s0, s1, weights)
        sizes.append(tuple(s1.shape[1:]))
    expected, c, side = [], 2, 8
    for i in range(layers):
        if i in model.reductions:
            c, side = 2 * c, (side + 1) // 2
        expected.append((3 * c, side, side))
    assert sizes == expected
    assert model(x).shape == (4, 3)
    assert len(model.arch_parameters()) == (2 if layers > 1 else 1)
    assert model.alpha_normal.shape == (num_edges(3), len(ALL_OPS) + 1) == (9, 6)
    genotype = model.genotype()
    assert (genotype.reduce == []) == (layers == 1)
    assert EvalNetwork(genotype, layers, 2, 3, 1, 1)(x).shape == (4, 3)


def _tiny_digits(n_train: int = 96, n_test: int = 32) -> Dataset:
    d = load_digits()
    return Dataset("digits", d.x_train[:n_train], d.y_train[:n_train], d.x_test[:n_test], d.y_test[:n_test], 10, False, d.source)


def test_seeded_search_is_reproducible_on_cpu() -> None:
    settings, errors = parse_settings({"num_epochs": "2", "init_channels": "2", "num_nodes": "2", "batch_size": "32",
                                       "alpha_lr": "3e-2", "stem_multiplier": "1", "random_state": "5"})
    assert not errors and settings is not None and settings.order == "second"
    data = _tiny_digits()
    runs = [search(data, ["separable_convolution_3x3", "max_pooling_3x3", "skip_connection"], 2, settings,
                   torch.device("cpu")) for _ in range(2)]
    assert runs[0].alphas == runs[1].alphas
    assert str(runs[0].genotype) == str(runs[1].genotype)
    assert [h["val_accuracy"] for h in runs[0].history] == [h["val_accuracy"] for h in runs[1].history]
    assert runs[0].history[-1]["steps"] == 2 and runs[0].seed == 5
    uniform = 1 / 4
    assert max(abs(p - uniform) for row in runs[0].alphas["normal"] for p in row) > 1e-3  # alphas did move


def test_skip_limit_stops_the_search_and_caps_the_genotype() -> None:
    settings, _ = parse_settings({"num_epochs": "3", "init_channels": "2", "num_nodes": "1", "batch_size": "48",
                                  "alpha_lr": "0", "stem_multiplier": "1", "random_state": "0", "max_skip_connections": "0",
                                  "order": "first"})
    assert settings is not None
    result = search(_tiny_digits(), ["skip_connection", "avg_pooling_3x3"], 1, settings, torch.device("cpu"))
    assert result.history[0]["skip_connections"] >= 1  # precondition of this seed: the initial cell has a skip
    assert result.stopped_early and len(result.history) == 1 and result.capped
    assert result.genotype.count("skip_connection") == 0


def test_settings_defaults_and_validation_messages() -> None:
    settings, errors = parse_settings({})
    assert not errors and settings is not None
    assert (settings.num_epochs, settings.w_lr, settings.w_lr_min, settings.alpha_lr, settings.batch_size,
            settings.init_channels, settings.num_nodes, settings.stem_multiplier, settings.w_grad_clip) == (
        50, 0.025, 0.001, 3e-4, 128, 16, 4, 3, 5.0)
    assert set(KATIB_DEFAULTS) == {"num_epochs", "w_lr", "w_lr_min", "alpha_lr", "w_weight_decay", "alpha_weight_decay",
                                   "w_momentum", "w_grad_clip", "batch_size", "num_workers", "init_channels",
                                   "print_step", "num_nodes", "stem_multiplier"}
    assert parse_settings({"batch_size": "None"})[0].batch_size is None  # type: ignore[union-attr]
    _, errors = parse_settings({"num_epochs": "0", "w_lr": "-1", "batch_size": "x", "order": "third",
                                "w_momentum": "1.5", "bogus": "1"})
    assert errors == [
        "spec.algorithm.algorithmSettings[bogus]: unknown darts setting (known: " + ", ".join(parse_settings.__globals__["DEFAULTS"]) + ")",
        "spec.algorithm.algorithmSettings[num_epochs]: must be >= 1 (got 0)",
        "spec.algorithm.algorithmSettings[w_lr]: must be > 0 (got '-1')",
        "spec.algorithm.algorithmSettings[w_momentum]: must be in [0, 1) (got '1.5')",
        "spec.algorithm.algorithmSettings[batch_size]: must be an integer (got 'x')",
        "spec.algorithm.algorithmSettings[order]: must be 'first' or 'second' (got 'third')",
    ]
    _, errors = parse_settings({"w_lr": "0.01", "w_lr_min": "0.1"})
    assert errors == ["spec.algorithm.algorithmSettings[w_lr_min]: must be <= w_lr (0.01) (got 0.1)"]


def _katib_example(name: str) -> dict:
    return yaml.safe_load((KATIB_NAS / name).read_text())


def test_plugin_maps_katib_nas_config_and_yields_one_trial() -> None:
    experiment = experiment_from_dict(_katib_example("darts-gpu.yaml"))
    algorithm = Darts(experiment, SearchSpace.from_experiment(experiment))
    [suggestion] = algorithm.suggest([], 3)
    assert json.loads(suggestion.assignments["search-space"].replace("'", '"')) == [
        "separable_convolution_3x3", "dilated_convolution_3x3", "dilated_convolution_5x5", "avg_pooling_3x3",
        "max_pooling_3x3", "skip_connection"]
    assert suggestion.assignments["num-layers"] == "3"
    assert json.loads(suggestion.assignments["algorithm-settings"].replace("'", '"'))["num_epochs"] == "3"
    assert algorithm.suggest([object()], 1) == []  # type: ignore[list-item]

    doc = _katib_example("darts-gpu.yaml")
    doc["spec"]["algorithm"]["algorithmSettings"] = [{"name": "num_nodes", "value": "0"}]
    doc["spec"]["nasConfig"]["operations"][0]["operationType"] = "lstm"
    doc["spec"]["nasConfig"]["operations"][1]["parameters"][0]["feasibleSpace"]["list"] = ["4"]
    del doc["spec"]["nasConfig"]["graphConfig"]["numLayers"]
    from katibx.search_algorithm import AlgorithmSettingsError

    experiment = experiment_from_dict(doc)
    with pytest.raises(AlgorithmSettingsError) as info:
        Darts(experiment, SearchSpace.from_experiment(experiment))
    assert info.value.errors == [
        "spec.algorithm.algorithmSettings[num_nodes]: must be >= 1 (got 0)",
        "spec.nasConfig.operations[0].operationType: 'lstm' is not supported by darts; use one of separable_convolution, "
        "dilated_convolution, convolution, avg_pooling, max_pooling, skip_connection",
        "spec.nasConfig.operations[1].parameters[0].feasibleSpace.list: operation 'dilated_convolution_4x4': "
        "the filter size must be an odd number >= 1",
        "spec.nasConfig.graphConfig.numLayers: Required value for darts",
    ]


def test_trial_reads_katib_quoted_arguments_and_refuses_bad_ones() -> None:
    args, settings, primitives, layers = parse_trial_args([
        "--algorithm-settings=\"{'num_epochs': '2', 'order': 'first'}\"",
        "--search-space=\"['max_pooling_3x3', 'skip_connection']\"", '--num-layers="2"'])
    assert (settings.num_epochs, settings.order, primitives, layers) == (2, "first", ["max_pooling_3x3", "skip_connection"], 2)
    with pytest.raises(ValueError, match=r"--search-space: unknown operation 'lstm'"):
        parse_trial_args(["--search-space=['lstm']", "--num-layers=1"])
    with pytest.raises(ValueError, match=r"--algorithm-settings: not valid JSON"):
        parse_trial_args(["--algorithm-settings={num_epochs", "--search-space=['skip_connection']", "--num-layers=1"])
    with pytest.raises(ValueError, match=r"--num-layers: must be >= 1"):
        parse_trial_args(["--search-space=['skip_connection']", "--num-layers=0"])
    run = subprocess.run([sys.executable, "-m", "katibx.nas", "--algorithm-settings={'num_epochs': 'x', 'w_lr': '0'}",
                          "--search-space=['skip_connection']", "--num-layers=1", "--dataset=digits"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.splitlines() == ["error: spec.algorithm.algorithmSettings[num_epochs]: must be an integer (got 'x')",
                                       "error: spec.algorithm.algorithmSettings[w_lr]: must be > 0 (got '0')"]


def test_cifar10_from_the_python_batches_and_a_clear_error_when_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="CIFAR-10 not found under .*data_batch_1..data_batch_5 and test_batch"):
        load_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch_data = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 4))}
        (folder / name).write_bytes(pickle.dumps(batch_data))
    data = load_cifar10(tmp_path)
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32) and data.augment
    (folder / "test_batch").write_bytes(b"junk")
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 python batch"):
        load_cifar10(folder)


def test_evaluation_trains_the_discrete_network_and_the_cli_refuses_bad_input() -> None:
    result = evaluate(all_skip_genotype(2), _tiny_digits(), num_layers=2, init_channels=2, epochs=2, batch_size=32,
                      stem_multiplier=1, device=torch.device("cpu"))
    assert 0 <= result.test_accuracy <= 1 and len(result.history) == 2 and result.parameters > 0
    run = subprocess.run([sys.executable, "-m", "katibx.nas.evaluate", "--genotype", "Genotype(normal=[[('none',0)]])"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 2 and "error: genotype.normal[0]: 'none' cannot be an edge" in run.stderr
    assert "Traceback" not in run.stderr


def test_core_imports_stay_free_of_torch() -> None:
    code = "import sys, katibx, algorithms.darts, nas.settings, nas.genotype; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


def test_katib_darts_cpu_example_runs_through_the_controller(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "examples" / "nas" / "darts-cpu.yaml").read_text())
    doc["spec"]["algorithm"]["algorithmSettings"][0]["value"] = "2"  # two epochs, to see the per-epoch stream
    doc["spec"]["objective"]["additionalMetricNames"] = ["Validation-Accuracy"]
    (tmp_path / "darts-cpu.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(REPO / "examples" / "nas" / "run_trial.py", tmp_path)
    store_path = tmp_path / "store.db"
    run = katibx_cli("run", "darts-cpu.yaml", cwd=tmp_path, store=store_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "darts-cpu: Succeeded" in run.stdout
    [trial] = json.loads(katibx_cli("get", "trials", "darts-cpu", "-o", "json", cwd=tmp_path,
                                    store=store_path).stdout)["items"]
    metrics = {m["name"]: m for m in trial["status"]["observation"]["metrics"]}
    genotype = Genotype.parse(metrics["Best-Genotype"]["latest"])
    assert sorted(genotype.normal[0]) == [("max_pooling_3x3", 0), ("max_pooling_3x3", 1)]
    assert genotype.reduce == []  # one layer: no reduction cell, as in Katib
    st = Store(store_path)
    try:
        record = st.get_experiment("darts-cpu")
        [stored] = st.trials(record.id)
        logs = st.observation_logs(stored.id)
        trial_dir = st.trial_dir(record, stored.name)
    finally:
        st.close()
    accuracies = [float(log.value) for log in logs if log.name == "Validation-Accuracy"]
    assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)  # one per epoch, as they happened
    assert Genotype.from_dict(json.loads((trial_dir / "genotype.json").read_text())) == genotype
    assert (trial_dir / "genotype.png").is_file() and json.loads((trial_dir / "search.json").read_text())["num_layers"] == 1

    # in MLflow: the genotype as text, JSON and picture, and the data it searched on as the run's input
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert katibx_cli("export", "mlflow", "darts-cpu", "--tracking-uri", uri, cwd=tmp_path,
                      store=store_path).returncode == 0
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name(record.qualified_name).experiment_id],
                               filter_string=f"tags.`katibx.trial` = '{stored.name}'")
    assert Genotype.parse(run.data.tags["metric.Best-Genotype"]) == genotype
    assert {"genotype.json", "genotype.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    [used] = run.inputs.dataset_inputs
    assert (used.dataset.name, used.dataset.source) == ("digits", "sklearn.datasets.load_digits")
    assert used.dataset.digest == load_digits().digest
