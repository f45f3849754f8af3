"""kd_loss equals Hinton et al. (2015)'s formula, computed here by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.fusion import kd_loss


def by_hand(s, t, y, T, a):
    """alpha T^2 KL(p_t || p_s) + (1 - alpha) CE, written out with explicit sums, batch mean."""
    n = s.shape[0]
    total_kl = 0.0
    total_ce = 0.0
    for i in range(n):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        zs, zt = sum(ps), sum(pt)
        ps = [p / zs for p in ps]
        pt = [p / zt for p in pt]
        total_kl += sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
        e = [math.exp(v) for v in s[i].tolist()]
        total_ce += -math.log(e[int(y[i])] / sum(e))
    return a * T * T * total_kl / n + (1 - a) * total_ce / n


@pytest.mark.parametrize("T,a", [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0), (3.0, 1.0), (0.5, 0.3)])
def test_equals_formula(T, a):
    g = torch.Generator().manual_seed(int(T * 10 + a * 100))
    s = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (6,), generator=g)
    assert kd_loss(s, t, y, temperature=T, alpha=a).item() == pytest.approx(by_hand(s, t, y, T, a), rel=1e-10)


def test_alpha_zero_is_cross_entropy_and_alpha_one_is_scaled_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    assert torch.allclose(kd_loss(s, t, y, temperature=3, alpha=0), F.cross_entropy(s, y))
    kl = (F.softmax(t / 3, 1) * (F.log_softmax(t / 3, 1) - F.log_softmax(s / 3, 1))).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, y, temperature=3, alpha=1), 9 * kl)
    # identical logits: no soft loss
    assert kd_loss(s, s.clone(), y, temperature=2, alpha=1).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (4,), generator=g)
    T = 2.0
    kd_loss(s, t, y, temperature=T, alpha=1.0).backward()
    # d/ds of T^2 KL(p_t || softmax(s/T)), batch mean: T (softmax(s/T) - p_t) / n  (Hinton et al., eq. 2)
    expected = T * (F.softmax(s.detach() / T, 1) - F.softmax(t.detach() / T, 1)) / 4
    assert torch.allclose(s.grad, expected)
    assert t.grad is None                      # the teacher is fixed
    s2 = s.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: kd_loss(z, t.detach(), y, temperature=1.7, alpha=0.4), (s2,))


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(student_logits=[[0.0]]), TypeError, "student_logits"),
    (dict(student_logits=torch.zeros(4)), ValueError, "student_logits"),
    (dict(student_logits=torch.zeros(4, 3, dtype=torch.long)), TypeError, "student_logits"),
    (dict(teacher_logits=torch.zeros(4, 2)), ValueError, "teacher_logits"),
    (dict(targets=[0, 1, 2, 0]), TypeError, "targets"),
    (dict(targets=torch.zeros(4)), TypeError, "targets"),
    (dict(targets=torch.zeros(3, dtype=torch.long)), ValueError, "targets"),
    (dict(targets=torch.tensor([0, 1, 3, 0])), ValueError, "targets"),
    (dict(temperature=0), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature="2"), TypeError, "temperature"),
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(alpha=-0.1), ValueError, "alpha"),
    (dict(alpha=True), TypeError, "alpha"),
])
def test_bad_input(kwargs, exc, word):
    args = dict(student_logits=torch.zeros(4, 3), teacher_logits=torch.zeros(4, 3),
                targets=torch.tensor([0, 1, 2, 0]), temperature=2.0, alpha=0.5)
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        kd_loss(args.pop("student_logits"), args.pop("teacher_logits"), args.pop("targets"), **args)
