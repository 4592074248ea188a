import pytest
import torch
from torch import nn

from modelpress.models import create_model
from modelpress.rnn_unroll import UnrolledRNN, has_rnn, unroll_rnns


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True), (3, True)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_unrolled_equals_the_recurrent_op(cls, layers, bidirectional, batch_first):
    torch.manual_seed(0)
    rnn = cls(5, 7, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first).eval()
    x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
    ref_out, ref_state = rnn(x)
    out, state = UnrolledRNN(rnn)(x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    if cls is nn.LSTM:
        torch.testing.assert_close(state[0], ref_state[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state[1], ref_state[1], atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(state, ref_state, atol=1e-5, rtol=1e-5)


def test_unroll_registry_models_keeps_logits_and_the_original():
    for cell in ("gru", "lstm"):
        model = create_model(cell, bidirectional=True, num_layers=2).eval()
        unrolled = unroll_rnns(model)
        x = torch.randn(4, 8, 8)
        torch.testing.assert_close(unrolled(x), model(x), atol=1e-5, rtol=1e-5)
        assert has_rnn(model) and not has_rnn(unrolled)
        assert sum(isinstance(m, nn.Linear) for m in unrolled.modules()) == 1 + 2 * 4


def test_refuses_what_it_cannot_unroll():
    with pytest.raises(ValueError, match="proj_size"):
        UnrolledRNN(nn.LSTM(4, 8, proj_size=2))
    with pytest.raises(ValueError, match="zero state"):
        UnrolledRNN(nn.GRU(4, 8))(torch.zeros(1, 2, 4), torch.zeros(1, 1, 8))
