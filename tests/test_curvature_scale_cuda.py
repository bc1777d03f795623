"""On CUDA, a max_memory budget holds: the allocator's peak during a product of the budgeted operator stays within
the budget (the plan is measured with the same allocator), and the budgeted operator equals the one-batch one."""
import pytest
import torch
import torch.nn.functional as F

import workbench as wb

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _ce(m, b):
    return F.cross_entropy(m(b[0]), b[1])


@pytest.mark.parametrize("kind", ["hessian", "ggn", "fisher"])
def test_budgeted_product_peak_stays_within_max_memory(kind):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = wb.problems.nets.resnet(depth=8, width=0.5, in_channels=3, n_classes=10).to(dev)
    x = torch.randn(256, 3, 32, 32)                     # stays on the CPU: microbatches move to the GPU
    y = torch.randint(0, 10, (256,))
    build = {"hessian": wb.curvature.hessian, "ggn": wb.curvature.ggn, "fisher": wb.curvature.fisher}[kind]
    plan = wb.curvature.memory_plan(model, _ce, (x, y), "64GiB", kind=kind)
    assert plan.how == "cuda peak" and plan.batch_size == 256
    budget = int(plan.fixed + 40.5 * plan.per_example)
    op = build(model, _ce, (x, y), max_memory=budget)
    assert op.attrs["microbatch_size"] == 40 and op.attrs["n_microbatches"] == 7
    v = torch.randn(op.size, device=dev, generator=torch.Generator(device=dev).manual_seed(1))
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    hv = op.matvec(v)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak <= 1.1 * budget, (peak, budget)
    ref = build(model, _ce, (x.to(dev), y.to(dev))).matvec(v)
    assert float((hv - ref).norm() / ref.norm()) < 1e-4
