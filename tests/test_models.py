"""The model registry: names, shapes, parameter counts (as in the README's "Models" table),
FLOP counts, errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from annealbench import models

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
SHALLOW = ["nn2", "nn3", "lenet4", "vgg9"]
DEEP = ["vgg19", "resnet18", "resnet50", "densenet121", "googlenet"]

# Exact parameter counts, as in the README's "Models" table: (model, shape, classes) -> count.
PARAMETER_COUNTS = {
    ("nn2", MNIST_SHAPE, 10): 266_610,
    ("nn3", MNIST_SHAPE, 10): 573_910,
    ("lenet4", MNIST_SHAPE, 10): 51_050,
    ("vgg9", MNIST_SHAPE, 10): 2_573_450,
    ("vgg19", CIFAR_SHAPE, 10): 20_035_018,
    ("vgg19", CIFAR_SHAPE, 100): 20_081_188,
    ("resnet18", CIFAR_SHAPE, 10): 11_173_962,
    ("resnet18", CIFAR_SHAPE, 100): 11_220_132,
    ("resnet50", CIFAR_SHAPE, 10): 23_520_842,
    ("resnet50", CIFAR_SHAPE, 100): 23_705_252,
    ("densenet121", CIFAR_SHAPE, 10): 6_956_298,
    ("densenet121", CIFAR_SHAPE, 100): 7_048_548,
    ("googlenet", CIFAR_SHAPE, 10): 6_158_346,
    ("googlenet", CIFAR_SHAPE, 100): 6_250_596,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Batch-2 passes are too small to share across threads; on a busy 2-core machine two
    threads run several times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names_are_the_papers_nine_models_shallow_first() -> None:
    assert models.names() == SHALLOW + DEEP


@pytest.mark.parametrize("name", SHALLOW + DEEP)
def test_spec_marks_the_deep_models_and_those_with_batchnorm(name: str) -> None:
    model_spec = models.spec(name)
    assert model_spec.name == name
    assert model_spec.deep == (name in DEEP)
    # The deep models are the BatchNorm ones; the shallow ones must have none (torch.func).
    assert model_spec.has_batchnorm == (name in DEEP)
    shape = CIFAR_SHAPE if model_spec.deep else MNIST_SHAPE
    built = models.build(name, shape, 10)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in built.modules())
    assert has_bn == model_spec.has_batchnorm


@pytest.mark.parametrize(("name", "shape", "classes"), list(PARAMETER_COUNTS))
def test_parameter_count_and_output_shape(
    name: str, shape: tuple[int, int, int], classes: int
) -> None:
    model = models.build(name, shape, classes).eval()
    assert parameter_count(model) == PARAMETER_COUNTS[name, shape, classes]
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize("name", SHALLOW + DEEP)
def test_forward_and_backward_in_training_mode(name: str) -> None:
    shape = CIFAR_SHAPE if models.spec(name).deep else MNIST_SHAPE
    torch.manual_seed(0)
    model = models.build(name, shape, 10).train()
    logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 10)
    assert logits.dtype == torch.float32
    nn.functional.cross_entropy(logits, torch.tensor([0, 9])).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    # Gradients reach the first layer: the stem is wired into the graph.
    first = next(model.parameters())
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SHALLOW)
def test_shallow_models_take_color_32x32_inputs_too(name: str) -> None:
    model = models.build(name, CIFAR_SHAPE, 10)
    assert model(torch.randn(2, *CIFAR_SHAPE)).shape == (2, 10)


def test_nn2_is_784_300_100_10() -> None:
    model = models.build("nn2", MNIST_SHAPE, 10)
    linear = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear == [(784, 300), (300, 100), (100, 10)]


def test_nn3_is_784_500_300_100_10() -> None:
    model = models.build("nn3", MNIST_SHAPE, 10)
    linear = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear == [(784, 500), (500, 300), (300, 100), (100, 10)]


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("lenet4", {nn.Conv2d: 2, nn.Linear: 2}),
        ("vgg9", {nn.Conv2d: 6, nn.Linear: 3}),
    ],
)
def test_layer_counts_match_the_paper(name: str, kinds: dict[type, int]) -> None:
    model = models.build(name, MNIST_SHAPE, 10)
    for kind, count in kinds.items():
        assert sum(isinstance(m, kind) for m in model.modules()) == count


@pytest.mark.parametrize("name", SHALLOW)
def test_shallow_models_vmap_over_stacked_parameters(name: str) -> None:
    """A later issue trains several seeds at once with torch.func: no buffers, no in-place ops."""
    torch.manual_seed(0)
    replicas = [models.build(name, MNIST_SHAPE, 10) for _ in range(3)]
    assert not list(replicas[0].buffers())
    params, buffers = stack_module_state(replicas)
    base = models.build(name, MNIST_SHAPE, 10).to("meta")
    x = torch.randn(4, *MNIST_SHAPE)

    def forward(p: dict, b: dict) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward)(params, buffers)
    assert batched.shape == (3, 4, 10)
    for index, replica in enumerate(replicas):
        torch.testing.assert_close(batched[index], replica(x))


@pytest.mark.parametrize("name", ["nn2", "lenet4", "vgg9", "resnet18", "googlenet"])
def test_init_is_deterministic_under_manual_seed(name: str) -> None:
    shape = CIFAR_SHAPE if models.spec(name).deep else MNIST_SHAPE
    states = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        states.append(models.build(name, shape, 10).state_dict())
    same, different = states[0], states[2]
    assert all(torch.equal(same[k], states[1][k]) for k in same)
    assert any(not torch.equal(same[k], different[k]) for k in same)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet34'") as error:
        models.build("resnet34", CIFAR_SHAPE, 10)
    for name in SHALLOW + DEEP:
        assert name in str(error.value)
    with pytest.raises(ValueError, match="valid models: nn2"):
        models.spec("VGG-9")


@pytest.mark.parametrize("name", DEEP)
def test_deep_models_need_32x32(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} .*needs C×32×32 .*got 1×28×28"):
        models.build(name, MNIST_SHAPE, 10)


@pytest.mark.parametrize(("name", "needs"), [("lenet4", "12×12"), ("vgg9", "8×8")])
def test_shallow_conv_models_reject_too_small_images(name: str, needs: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} needs images of at least {needs}.*got 1×7×7"):
        models.build(name, (1, 7, 7), 10)


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [
        ((28, 28), 10, "input_shape must be"),
        ((1, 0, 28), 10, "input_shape must be"),
        ((1.0, 28, 28), 10, "input_shape must be"),
        (MNIST_SHAPE, 1, "num_classes must be"),
        (MNIST_SHAPE, True, "num_classes must be"),
    ],
)
def test_malformed_arguments_are_refused(shape: tuple, classes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models.build("nn2", shape, classes)  # type: ignore[arg-type]


def test_build_accepts_a_torch_size() -> None:
    model = models.build("lenet4", torch.Size(MNIST_SHAPE), 10)
    assert model(torch.zeros(1, *MNIST_SHAPE)).shape == (1, 10)


def test_the_registry_imports_without_torch() -> None:
    """The report reads names and paper labels from the registry without paying for torch."""
    code = (
        "import sys; from annealbench import models; models.spec('densenet121').paper_name; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_flops_are_counted_from_the_layers() -> None:
    flops = models.count_flops("nn2", MNIST_SHAPE, 10)
    matmuls = 784 * 300 + 300 * 100 + 100 * 10
    assert flops.forward == 2 * matmuls
    assert flops.train == 3 * flops.forward
    # backward: weight gradients of every layer, input gradients of all but the first
    assert flops.backward == 2 * matmuls + 2 * (300 * 100 + 100 * 10)
    assert flops.executed == flops.forward + flops.backward


def test_counting_flops_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    models.count_flops("lenet4", MNIST_SHAPE, 10)
    assert torch.equal(torch.rand(3), expected)
