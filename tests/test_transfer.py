"""Host/device moves (`graphgen.models.transfer`): host copies made once and reused while the
weights are unchanged, copied again when they were written on the device. The `meta` device stands
in for an accelerator: its tensors hold no values, so only the host copy can bring them back."""

from __future__ import annotations

import torch

from graphgen.models.transfer import HostCopy, TransferStats, needs_copy, to_device, to_host

META = torch.device("meta")


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))  # parameters and buffers


def test_round_trips_reuse_one_host_copy_and_keep_the_values():
    net = model()
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    host, stats = HostCopy(), TransferStats()
    to_host(net, host, stats)  # loaded on the host: its own tensors are the host copy
    pointers = {k: v.data_ptr() for k, v in host.tensors.items()}
    for _ in range(3):
        to_device(net, META, host, stats)
        assert all(t.device.type == "meta" for t in net.state_dict().values())
        to_host(net, host, stats)
    assert host.copies_made == 0 and stats.to_host_bytes == 0  # never copied back: nothing changed
    assert {k: v.data_ptr() for k, v in host.tensors.items()} == pointers
    assert stats.to_device_bytes == 3 * sum(v.numel() * v.element_size() for v in expected.values())
    for name, value in net.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert isinstance(net[0].weight, torch.nn.Parameter)


def test_only_weights_written_on_the_device_need_a_copy_back():
    net = model()
    host = HostCopy()
    to_host(net, host)
    to_device(net, META, host)
    slots = {"0.weight": (net[0], "weight"), "0.bias": (net[0], "bias"), "1.running_mean": (net[1], "running_mean")}

    def stale() -> set[str]:
        return {q for q, (owner, name) in slots.items()
                if needs_copy(host, q, owner, name, getattr(owner, name))}

    assert stale() == set()
    with torch.no_grad():
        net[0].bias.add_(1.0)  # e.g. a LoRA merged in place
    net[1].running_mean = torch.zeros(4, device=META)  # a buffer replaced
    assert stale() == {"0.bias", "1.running_mean"}

