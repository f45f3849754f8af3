"""Issue 14: read-only calls leave the model as it was; example_inputs and data that do not
fit the model raise a ValueError naming them; trace errors name no function the user did
not call."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import prunekit as pk
from prunekit.core.graph.channels import plan_channels
from prunekit.structured.compact import compact, zero_removed_channels

from helpers import assert_untouched, flaky_cross_entropy, snapshot


class Counter(nn.Module):
    """A user module that counts its calls in a buffer (and in a non-persistent one)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("seen", torch.zeros(()), persistent=False)

    def forward(self, x):
        self.calls += 1
        self.seen.add_(x.shape[0])
        return self.fc(x)


def counting_net(seed: int = 0) -> nn.Module:
    """BatchNorm (in train mode, it would update its statistics) and a counting module."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), Counter(8), nn.ReLU(),
                         nn.Linear(8, 3)).train()


X = torch.randn(6, 4)


def everything(model: nn.Module) -> dict:
    """What a read-only call must leave as it was, beyond tests.helpers.snapshot."""
    return {
        "snap": snapshot(model),
        "buffers": {k: v.clone() for k, v in model.named_buffers()},  # non-persistent ones too
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
    }


def assert_as_before(model: nn.Module, before: dict) -> None:
    assert_untouched(model, before["snap"])
    now = everything(model)
    assert now["buffers"].keys() == before["buffers"].keys()
    for k, v in before["buffers"].items():
        assert torch.equal(now["buffers"][k], v), k
    assert now["modes"] == before["modes"]
    assert now["flags"] == before["flags"]
    assert now["hooks"] == before["hooks"]
    for g, h in zip(now["grads"], before["grads"]):
        assert (g is None) == (h is None) and (g is None or torch.equal(g, h))


def prepared(model: nn.Module) -> nn.Module:
    """Odd but legal user state: a frozen layer, a .grad, a hook of the user's."""
    model[0].bias.requires_grad_(False)
    model[5].weight.grad = torch.ones_like(model[5].weight)
    model[2].register_forward_hook(lambda m, i, o: None)
    return model


READ_ONLY = {
    "summary": lambda m, x: pk.summary(m, x),
    "count_macs": lambda m, x: pk.count_macs(m, x),
    "compact": lambda m, x: compact(m, x),
    "zero_removed_channels": lambda m, x: zero_removed_channels(m, x),
    "plan_channels": lambda m, x: plan_channels(m, x),
}


@pytest.mark.parametrize("call", list(READ_ONLY))
@pytest.mark.parametrize("masked", [False, True])
def test_read_only_calls_leave_the_model_as_it_was(call, masked):
    model = prepared(counting_net())
    if masked:
        pk.prune(model, 0.5, criterion="random", granularity="channel", scope="layer", exclude="5.weight")
        model.train()
    before = everything(model)
    READ_ONLY[call](model, X)
    assert_as_before(model, before)
    assert model[3].calls == 0 and model[3].seen == 0 and model.training and model[1].training


def test_latency_restores_what_the_timed_passes_change():
    model = counting_net()
    before = everything(model)
    pk.metrics.latency(model, X, min_run_time=0.01)           # train mode, as the user left it
    assert_as_before(model, before)


def test_compact_result_keeps_the_statistics_and_counters():
    model = counting_net()
    pk.prune(model, 0.5, criterion="random", granularity="channel", scope="layer", exclude="5.weight",
             example_inputs=X)
    model[3].calls.fill_(7)
    small = compact(model, X)
    assert small[3].calls == 7 and small[3].seen == 0          # no forward pass counted in the result
    assert torch.equal(small[1].running_var, model[1].running_var[small_kept(model)])


def small_kept(model: nn.Module) -> torch.Tensor:
    return model[0].weight_mask.any(dim=1)


def test_prune_with_example_inputs_traces_read_only():
    model = prepared(counting_net())
    before = everything(model)
    pk.prune(model, 0.5, criterion="magnitude", granularity="channel", example_inputs=X, exclude="5.weight")
    # the masks are the change asked for; BatchNorm statistics, counters, modes, flags stay
    assert torch.equal(model[1].running_mean, before["buffers"]["1.running_mean"])
    assert torch.equal(model[1].running_var, before["buffers"]["1.running_var"])
    assert torch.equal(model[1].num_batches_tracked, before["buffers"]["1.num_batches_tracked"])
    assert model[3].calls == 0 and model[3].seen == 0
    assert [m.training for m in model.modules()] == before["modes"]
    assert not model[0].bias.requires_grad


# --------------------------------------------------------------- example_inputs that do not fit

class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x, z):
        return self.head(torch.relu(self.a(x) + self.b(z)))


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).train()


MISFITS = [  # (model, example_inputs): wrong shape, rank, dtype, arity
    (counting_net, torch.randn(6, 5)),                            # wrong width
    (counting_net, torch.randn(4)),                               # no batch dimension
    (counting_net, torch.randn(6, 4).long()),                     # wrong dtype
    (counting_net, (torch.randn(6, 4), torch.randn(6, 4))),       # one input too many
    (counting_net, ()),                                           # none
    (conv_net, torch.randn(2, 4, 8, 8)),                          # wrong channels
    (TwoInputs, torch.randn(2, 4)),                               # one input too few
]

CALLS = {
    **READ_ONLY,
    "prune": lambda m, x: pk.prune(m, 0.5, granularity="channel", example_inputs=x),
}


@pytest.mark.parametrize("make, x", MISFITS)
@pytest.mark.parametrize("call", list(CALLS))
def test_example_inputs_that_do_not_fit_raise_a_value_error(make, x, call):
    model = make()
    before = everything(model)
    with pytest.raises(ValueError, match="example_inputs does not fit the model") as err:
        CALLS[call](model, x)
    assert err.value.__cause__ is not None                     # the original error is chained
    assert not str(err.value).startswith("compact")
    assert_as_before(model, before)


@given(width=st.integers(1, 12).filter(lambda w: w != 4), batch=st.integers(1, 5),
       rank=st.sampled_from([1, 2, 3]))
def test_any_wrong_input_shape_is_named(width, batch, rank):
    model = counting_net()
    x = torch.randn(*([batch] * (rank - 1)), width)
    before = everything(model)
    for call in ("summary", "compact"):
        with pytest.raises(ValueError, match="example_inputs"):
            CALLS[call](model, x)
        assert_as_before(model, before)


class OptionalScale(nn.Module):
    """A forward with an optional argument that example_inputs leave out."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x, scale=None):
        h = torch.relu(self.fc1(x))
        if scale is not None:
            h = h * scale
        return self.fc2(h)


def test_a_forward_with_an_optional_argument_is_traced_with_its_default():
    torch.manual_seed(0)
    model = OptionalScale()
    pk.prune(model, 0.5, criterion="magnitude", granularity="channel", example_inputs=X, exclude="fc2.weight")
    small = compact(model, X)
    assert small.fc1.out_features == 4
    with torch.no_grad():
        assert torch.allclose(small(X), zero_removed_channels(model, X)(X), atol=1e-6)
        assert torch.allclose(small(X, 2.0), zero_removed_channels(model, X)(X, 2.0), atol=1e-6)
    assert pk.summary(model, X).macs > pk.summary(small, X).macs


# ------------------------------------------------------------------------- data that does not fit

def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.fc(x)}


def good(n: int = 5) -> tuple:
    return torch.randn(n, 4), torch.randint(0, 3, (n,))


BAD_DATA = [  # (model, data, words in the message): the bad batch is the second one
    (mlp, [good(), (torch.randn(5, 6), torch.randint(0, 3, (5,)))], ["data", "batch 1", "(5, 6)"]),
    (mlp, [good(), (torch.randn(5, 4), torch.rand(5))], ["loss_fn", "data", "batch 1", "float32"]),
    (mlp, [good(), (torch.randn(5, 4), torch.randint(0, 3, (5,), dtype=torch.int32))], ["loss_fn", "batch 1", "int32"]),
    (mlp, [good(), (torch.randn(5, 4), torch.ones(5, dtype=torch.bool))], ["loss_fn", "batch 1", "bool"]),
    (mlp, [good(), (torch.randn(5, 4), torch.full((5,), 7))], ["loss_fn", "batch 1", "range"]),
    (mlp, [good(), (torch.randint(0, 3, (5, 4)), torch.randint(0, 3, (5,)))], ["data", "batch 1", "int64"]),
    (mlp, [good(), (torch.randn(5), torch.randint(0, 3, (5,)))], ["data", "batch 1", "(5,)"]),
    (mlp, [good(), (torch.randn(5, 4), torch.randint(0, 3, (3,)))], ["loss_fn", "batch 1", "(3,)"]),
    (DictOut, [good(), good()], ["loss_fn", "batch 0", "dict"]),
]


@pytest.mark.parametrize("make, data, words", BAD_DATA)
@pytest.mark.parametrize("criterion", ["snip", "taylor", "grasp", "obd", "loss_change"])
def test_data_that_does_not_fit_raises_a_value_error_naming_it(make, data, words, criterion):
    model = make()
    before = everything(model)
    with pytest.raises(ValueError) as err:
        pk.score(model, criterion, data=data)
    msg = str(err.value)
    assert err.value.__cause__ is not None
    assert words[0] in msg and "data" in msg, msg
    # the criteria whose batches go through summed_over_batches also say which batch and what
    # was wrong with it; obd (one sample at a time) and loss_change loop over the batches
    # themselves and say "a batch of data"
    if criterion in ("snip", "taylor", "grasp"):
        assert all(w in msg for w in words), msg
    assert_as_before(model, before)


@pytest.mark.parametrize("make, data, words", [case for case in BAD_DATA if "loss_fn" not in case[2]])
@pytest.mark.parametrize("criterion", ["apoz", "thinet"])
def test_activation_criteria_name_the_batch_whose_inputs_do_not_fit(make, data, words, criterion):
    model = make()
    before = everything(model)
    with pytest.raises(ValueError) as err:
        pk.score(model, criterion, data=data)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert_as_before(model, before)


def test_a_users_loss_fn_error_names_loss_fn_and_the_batch():
    with pytest.raises(ValueError, match="loss_fn.*batch 1.*boom") as err:
        pk.score(mlp(), "snip", data=[good(), good()], loss_fn=flaky_cross_entropy(fail_at=2))
    assert isinstance(err.value.__cause__, RuntimeError)


# ----------------------------------------------------------------- trace errors name no function

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc2(self.fc1(x))
        return self.fc2(x)


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.fc(torch.relu(self.fc(x))))


@pytest.mark.parametrize("model, exc, word", [
    (Branchy(), TypeError, "symbolic_trace"),
    (Reused(), ValueError, "more than once"),
])
def test_trace_errors_from_prune_do_not_say_compact(model, exc, word):
    before = everything(model)
    with pytest.raises(exc, match=word) as err:
        pk.prune(model, 0.5, granularity="channel", example_inputs=X)
    assert not str(err.value).startswith("compact")
    assert_as_before(model, before)
