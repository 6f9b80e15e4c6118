"""Gradient and determinism checks the ops' tests share."""
import torch


def grads(fn, *inputs, seed=7):
    """fn(*leaves) backpropagated with a fixed random upstream gradient: (output, grads)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    (out * g).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def assert_grads_match(fn, fn_ref, inputs, tol):
    """fn and the reference fn_ref agree on inputs, forward and backward, to tol (relative to
    each gradient's largest entry)."""
    out, got = grads(fn, *inputs)
    want, want_grads = grads(fn_ref, *inputs)
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    for a, b in zip(got, want_grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def twice(run):
    """run() -> tensors, twice: the results must agree bit for bit."""
    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
